-- issuer: Pebble over http-01 through the webroot (the test stops the web
-- server to make renewals fail); notifications to a webhook receiver (/ok,
-- plus /hang and /fail as hostile endpoints), a command that appends the
-- event to a file, sendmail to a stub, and a hook that raises
local certmaint = require "certmaint"
local notify = certmaint.notify
local hook = os.getenv("NOTIFY_URL")
local everyone = {
  notify.webhook { url = hook .. "/hang", timeout = "4s", deadline = "4s", attempts = 1 },
  notify.webhook { url = hook .. "/ok", headers = { Authorization = "Bearer it-token" } },
  notify.webhook { url = hook .. "/fail", attempts = 3, backoff = "1s", deadline = "10s" },
  notify.command { "/bin/sh", "-c", '{ cat; echo; } >> "$1"; echo "$CERTMAINT_EVENT $CERTMAINT_KIND $CERTMAINT_NAME" >> "$1.env"',
    "sh", os.getenv("NOTIFY_COMMAND_OUT") },
  notify.sendmail { to = "ops@example.test", from = "certmaint@example.test", path = os.getenv("NOTIFY_SENDMAIL") },
  function() error("this notification hook is broken") end,
}
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ops@example.test",
    challenges = { webroot = os.getenv("WEBROOT") },
  },
  certificates = { "notify.example.test" },
  renewal_window_ratio = 0.9,
  renew_check_interval = os.getenv("CERTMAINT_RENEW_CHECK") or "10m",
  on_failure = everyone,
  on_expiring = everyone,
  on_recovered = everyone,
}
