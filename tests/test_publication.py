"""Every form a publication and a client info take: each one there and back, and bad input refused."""

from __future__ import annotations

import orjson
import pytest

from broker import errors
from broker.publication import (
    Publication,
    api_publication,
    client_info_from_json,
    client_info_json,
    client_info_reply,
    publication_body,
    publication_from_params,
    publication_params,
    publications_of,
    reply_from_wire,
    unb64,
    wire_publication,
)

FROM_CLIENT = Publication(
    "chat",
    b'{"t":"hi"}',
    offset=7,
    epoch="e",
    user="42",
    client="c1",
    conn_info=b'{"n":1}',
    chan_info=b"\xff",
)
FROM_API = Publication("news", b"\x00\x01", tags={"k": "v"})


@pytest.mark.parametrize("publication", [FROM_CLIENT, FROM_API])
def test_frames_params_and_wire_keep_every_byte(publication: Publication):
    assert Publication.from_frames(publication.to_frames()) == publication
    again = publication_from_params(orjson.loads(orjson.dumps(publication_params(publication))))
    assert (again.channel, again.data, again.user, again.client) == (
        publication.channel,
        publication.data,
        publication.user,
        publication.client,
    )
    assert (again.conn_info, again.chan_info) == (publication.conn_info, publication.chan_info)
    reply = reply_from_wire(orjson.loads(orjson.dumps(wire_publication(publication))))
    assert reply == publication_body(publication)


def test_the_reply_shape_always_has_user_and_client_and_leaves_out_empty_info():
    assert client_info_reply("", "c") == {"user": "", "client": "c"}
    assert FROM_CLIENT.client_info() == {
        "user": "42",
        "client": "c1",
        "conn_info": b'{"n":1}',
        "chan_info": b"\xff",
    }
    assert FROM_API.client_info() is None


def test_client_info_json_splices_raw_json_and_decodes_back():
    sent = orjson.dumps(client_info_json("42", "c1", b'{"n":1}', b"[1,2]"))
    assert orjson.loads(sent) == {"user": "42", "client": "c1", "conn_info": {"n": 1}, "chan_info": [1, 2]}
    assert client_info_from_json(orjson.loads(sent)) == client_info_reply("42", "c1", b'{"n":1}', b"[1,2]")


def test_the_api_shape_keeps_json_and_base64s_binary():
    api = orjson.loads(orjson.dumps(api_publication(wire_publication(FROM_CLIENT))))
    assert api["data"] == {"t": "hi"} and api["info"]["conn_info"] == {"n": 1}
    assert api["info"]["chan_info"] == "/w=="


def test_a_writers_answer_is_converted_once():
    answer = {"publications": [wire_publication(FROM_CLIENT)]}
    first = publications_of(answer)
    assert publications_of(answer) is first and first[0]["data"] == FROM_CLIENT.data


@pytest.mark.parametrize("value", [5, "!!", "a", ["x"]])
def test_bad_base64_is_a_bad_request(value: object):
    with pytest.raises(errors.ClientError) as caught:
        unb64(value)
    assert caught.value.code == errors.BAD_REQUEST.code


@pytest.mark.parametrize(
    "params",
    [{"data": {}}, {"channel": "", "data": {}}, {"channel": "chat"}, {"channel": "chat", "b64data": "!"}],
)
def test_params_without_channel_or_data_are_refused(params: dict[str, object]):
    with pytest.raises(errors.ClientError):
        publication_from_params(params)
