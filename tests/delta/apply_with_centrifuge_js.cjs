// Applies fossil deltas with centrifuge-js's own decoder (not exported by the package, so it is read
// from the built module): stdin is a JSON list of [source, delta] pairs in base64, stdout the targets.
'use strict';
const fs = require('fs');
const path = require('path');

const nodeDir = process.argv[2];
const source = fs.readFileSync(path.join(nodeDir, 'node_modules', 'centrifuge', 'build', 'index.js'), 'utf8');
const moduleRequire = require('module').createRequire(path.join(nodeDir, 'package.json'));
const applyDelta = new Function('exports', 'require', 'module', `${source}\nreturn applyDelta;`)(
  {}, moduleRequire, { exports: {} },
);

const pairs = JSON.parse(fs.readFileSync(0, 'utf8'));
const out = pairs.map(([src, delta]) => {
  try {
    const target = applyDelta(Buffer.from(src, 'base64'), Buffer.from(delta, 'base64'));
    return Buffer.from(target).toString('base64');
  } catch (err) {
    return { error: String(err) };
  }
});
process.stdout.write(JSON.stringify(out));
