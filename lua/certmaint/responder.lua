--- certmaint.responder: where the engine gets revocation data from — the
-- seam between the OCSP/CRL passes and the network.
--
--   local r = responder.new(policy)
--   local der, err, code = r:ocsp(url, request_der, cert, issuer_pem)
--   local der, err, code = r:crl(url)
--
-- This one fetches over HTTP (certmaint.fetch) with the policy's `ocsp`
-- limits (timeout, max_response_size, max_crl_size). certmaint.testing
-- passes an in-process one with the same two methods (testing.responder),
-- so specs need no network. Neither verifies anything: the passes verify
-- every answer against the issuer before using or storing it.
local fetch = require "certmaint.fetch"
local failpoint = require "certmaint.failpoint"

local M = {}
local Responder = {}
Responder.__index = Responder

--- responder.new(policy): fetches with policy.ocsp's limits (defaults
-- when the policy has no `ocsp` record).
function M.new(policy)
  local o = (type(policy) == "table" and policy.ocsp) or {}
  return setmetatable({
    timeout = o.timeout or fetch.DEFAULT_TIMEOUT,
    max_response_size = o.max_response_size or fetch.DEFAULT_MAX_SIZE,
    max_crl_size = o.max_crl_size or 32 * 1024 * 1024,
  }, Responder)
end

--- r:ocsp(url, request_der, cert, issuer_pem) -> response DER | nil, err, code.
-- cert and issuer_pem are not needed to fetch (an in-process responder answers from them).
function Responder:ocsp(url, request_der)
  return failpoint.call("ocsp.fetch", fetch.ocsp, url, request_der, { max_size = self.max_response_size, timeout = self.timeout })
end

--- r:crl(url) -> CRL bytes (DER or PEM, as served) | nil, err, code.
function Responder:crl(url)
  return fetch.get(url, { max_size = self.max_crl_size, timeout = self.timeout })
end

M.Responder = Responder
return M
