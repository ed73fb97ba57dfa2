"""Call-center audio ingest: Twilio Media Streams, FreeSWITCH, Asterisk AudioSocket; call event subscribers and webhooks."""
