"""Session management: revoked tokens, invalidated user tokens and blocked users (Centrifugo PRO's API)."""
