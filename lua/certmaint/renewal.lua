--- certmaint.renewal: when the default policy renews a certificate.
--
-- Pure functions of a certificate's validity, the CA's ARI window and `now`:
-- nothing here reads the clock, so a spec can walk a certificate through its
-- whole life in a loop.
--
--   local renewal = require "certmaint.renewal"
--   local at, reason = renewal.renew_at(cert, opts)        -- Unix time, layer
--   local due, reason = renewal.needs_renewal(cert, now, opts)
--
-- `cert` needs not_before and not_after (Unix seconds); optional `serial` (hex
-- string) and `ari = { start = t, ["end"] = t }`, the suggested window from the
-- CA's renewalInfo resource (RFC 9773).
-- `opts` (all optional): ratio (number in (0, 1); nil = the default below),
-- explicit_ratio (bool; defaults to `ratio ~= nil`: the operator wrote
-- renewal_window_ratio in the policy), check_interval (seconds between renew
-- passes, default 600, as certmagic's DefaultRenewCheckInterval, and the
-- engine's renew_check_interval default). A policy's needs_renewal hook that
-- wants the engine's own rule with the policy's own options calls the third
-- argument it gets: `needs_renewal = function(cert, now, default) ... return
-- default(cert, now) end`.
--
-- The decision is layered like certmagic's Config.certNeedsRenewal (config.go):
--
-- 1. ARI ("ari"). When the CA published a window, renew at one point inside it.
--    RFC 9773 asks each client to pick a uniformly random time in the window so
--    a fleet does not renew at once; certmagic picks with math/rand and stores
--    the choice. We derive the point from the certificate's serial instead
--    (FNV-1a of the serial string, scaled into the window): CA serials carry at
--    least 64 random bits (CA/B Baseline Requirements 7.1), so the points are
--    spread as uniformly as random picks would be, yet the choice is a pure
--    function -- every tick and every instance sharing the storage agrees on it
--    without storing anything. A certificate without a serial renews at the
--    window's start. A window whose end is before its start is ignored.
--
-- 2. Emergency floor ("emergency"), only when ARI is in play: never later than
--    the last 1/20 of the lifetime, whatever the window says. This is
--    certmagic's "certificate is in emergency renewal window; superseding ARI"
--    check (currentlyInRenewalWindow(notBefore, expiration, 1.0/20.0)): a bug in
--    the CA, in our ARI client or in stored metadata must never cost uptime.
--
-- 3. Ratio rule ("window"): renew once now > not_after - ratio * lifetime,
--    certmagic's currentlyInRenewalWindow. The default ratio is 1/3, or 1/2
--    when the lifetime is under 10 days: certbot 4.0 renews "with 1/3rd of
--    lifetime left (or 1/2 of lifetime left, if the lifetime is shorter than 10
--    days)", and lego's --dynamic renew (needRenewalDynamic) uses a divisor of
--    2 when the lifetime rounds to 10 days or less (we follow certbot's strict
--    "shorter than 10 days"). With an ARI window the *default* ratio yields to
--    the CA's window (lego renews on the ARI time whenever the CA gives one,
--    and the window is the better information), but a ratio the operator wrote
--    in the policy is honoured as well, as certmagic honours a configured
--    RenewalWindowRatio alongside ARI.
--
-- 4. Imminent-expiry guard ("expiring"): whatever the layers above decided,
--    renew once the certificate expires within max(lifetime / 50,
--    5 * check_interval). Both terms are certmagic's last check
--    (currentlyInRenewalWindow(..., 1.0/50.0) || time.Until(expiration) <
--    RenewCheckInterval*5): the ratio covers long lifetimes, the interval term
--    leaves short-lived certificates at least five renew passes to succeed in.
--    So no ratio, however small, and no ARI window, however late, leaves a
--    certificate to expire. Unlike certmagic we cap the guard at half the
--    lifetime: with 10-minute checks certmagic's interval term would call a
--    30-second certificate "expiring" the moment it is issued and renew it
--    again at once, every pass -- a renewal storm against the CA. No guard
--    renews a certificate in the first half of its life.
--
-- 5. Expired ("expired"): now > not_after. RFC 5280 validity includes the
--    notAfter second itself, so a certificate is expired only after it.
--
-- Boundaries are strict everywhere: due once now > renew_at (certmagic uses
-- time.Now().After(renewalWindowStart)).
local core = require "certmaint.core"

local M = {}

M.DEFAULT_RATIO = 1 / 3
M.SHORT_LIVED_RATIO = 1 / 2
M.SHORT_LIVED = 10 * 86400     -- lifetimes under this use SHORT_LIVED_RATIO
M.EMERGENCY_RATIO = 1 / 20
M.IMMINENT_RATIO = 1 / 50
M.IMMINENT_CHECKS = 5          -- renew passes left before expiry
M.IMMINENT_CAP = 1 / 2         -- the guard never reaches further back than this
M.DEFAULT_CHECK_INTERVAL = 600 -- certmaint's (and certmagic's) renew_check_interval

local OPTS = { ratio = true, explicit_ratio = true, check_interval = true }

local function check_args(cert, opts, fname)
  if type(cert) ~= "table" then
    error(fname .. ": cert must be a table, got " .. type(cert), 3)
  end
  if type(cert.not_before) ~= "number" or type(cert.not_after) ~= "number" then
    error(fname .. ": cert.not_before and cert.not_after must be numbers (Unix seconds)", 3)
  end
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(fname .. ": opts must be a table, got " .. type(opts), 3)
  end
  for k in pairs(opts) do
    if not OPTS[k] then error(fname .. ": unknown option " .. tostring(k), 3) end
  end
  if opts.ratio ~= nil and (type(opts.ratio) ~= "number" or not (opts.ratio > 0 and opts.ratio < 1)) then
    error(fname .. ": opts.ratio must be a number in (0, 1)", 3)
  end
  if opts.check_interval ~= nil and (type(opts.check_interval) ~= "number" or opts.check_interval < 0) then
    error(fname .. ": opts.check_interval must be a non-negative number", 3)
  end
  return opts
end

--- The ratio the ratio rule uses for a lifetime: opts ratio, or the default.
function M.default_ratio(lifetime)
  if lifetime < M.SHORT_LIVED then return M.SHORT_LIVED_RATIO end
  return M.DEFAULT_RATIO
end

-- The rule itself is C (core/renewal.c: core.renew_at, core.needs_renewal,
-- core.ari_point), the one implementation the cache's bulk load uses too;
-- this module keeps the Lua API and its argument checks.

--- The point inside the ARI window this certificate renews at, or nil when
-- the certificate has no usable window.
function M.ari_point(cert)
  return core.ari_point(cert.ari, cert.serial)
end

-- The core's options for cert: the caller's, plus what the ARI layer needs.
local function core_opts(cert, opts)
  if cert.ari == nil then return opts end
  return { ratio = opts.ratio, explicit_ratio = opts.explicit_ratio,
    check_interval = opts.check_interval, serial = cert.serial, ari = cert.ari }
end

--- When the default policy renews this certificate.
-- @return the Unix time after which renewal is due, and the layer that sets it
-- ("ari", "emergency", "window" or "expiring"; the earliest wins, the first
-- layer on a tie).
function M.renew_at(cert, opts)
  opts = check_args(cert, opts, "renewal.renew_at")
  return core.renew_at(cert.not_before, cert.not_after, core_opts(cert, opts))
end

--- Does the default policy renew this certificate now?
-- @return true, reason ("ari", "emergency", "window", "expiring", "expired")
-- or false, nil; the third value is renew_at.
function M.needs_renewal(cert, now, opts)
  opts = check_args(cert, opts, "renewal.needs_renewal")
  if type(now) ~= "number" then
    error("renewal.needs_renewal: now must be a number (Unix seconds), got " .. type(now), 2)
  end
  return core.needs_renewal(cert.not_before, cert.not_after, now, core_opts(cert, opts))
end

--- certmagic's currentlyInRenewalWindow, for policies that want the plain
-- ratio rule: true once now > not_after - ratio * (not_after - not_before).
function M.in_window(not_before, not_after, ratio, now)
  return now > not_after - ratio * (not_after - not_before)
end

return M
