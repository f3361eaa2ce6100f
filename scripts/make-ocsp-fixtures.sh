#!/usr/bin/env bash
# make-ocsp-fixtures.sh - regenerate tests/fixtures/ocsp/ (OCSP responses and
# CRLs) with the built core (core.cert_issue, core.ocsp_response_build,
# core.crl_build) and, for an independent second implementation, the openssl CLI.
#
#   scripts/make-ocsp-fixtures.sh [OUTDIR]   (default: tests/fixtures/ocsp)
#
# Needs a build (CERTMAINT_BUILD_DIR, default ./build) for lua/certmaint/core.so.
# Names, serials and every time the core writes are fixed (README.md in the
# fixture folder lists them); only the keys, and the times of the openssl_*
# files, change from one run to the next.  Tests read those facts, so change
# both together.  Also refreshes the fuzz corpora tests/fuzz/corpus/{ocsp,crl}/
# with copies named fixture_*.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/tests/fixtures/ocsp}
build=${CERTMAINT_BUILD_DIR:-$here/build}
[ -f "$build/lua/certmaint/core.so" ] || { echo "no $build/lua/certmaint/core.so: build first" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- with the core: the PKI, every fixed-time response and CRL ------------
LUA_CPATH="$build/lua/?.so;;" LUA_PATH="$here/lua/?.lua;;" lua5.4 - "$out" <<'LUA'
local core = require "certmaint.core"
local out = arg[1]

local T = 1767225600            -- 2026-01-01T00:00:00Z: "now" of the tests is T + 3600
local DAY = 86400
local FROM, TO = 1704067200, 4860000000 -- 2024-01-01 .. 2124-01-04: never expire

local function write(name, data)
  local f = assert(io.open(out .. "/" .. name, "wb"))
  assert(f:write(data))
  assert(f:close())
end

local function key(name)
  local k = assert(core.key_generate("p256"))
  write(name .. ".key", k)
  return k
end

local function cert(name, o)
  local pem = assert(core.cert_issue(o))
  write(name .. ".pem", pem)
  return pem
end

-- the issuing CA, and an impostor with the same name but another key
local ca_key = key("ca")
local ca = cert("ca", { subject_key = ca_key, issuer_key = ca_key, cn = "certmaint OCSP Fixture CA",
  is_ca = true, path_len = 0, not_before = FROM, not_after = TO, serial = "01" })
local impostor_key = key("impostor")
local impostor = cert("impostor", { subject_key = impostor_key, issuer_key = impostor_key,
  cn = "certmaint OCSP Fixture CA", is_ca = true, not_before = FROM, not_after = TO, serial = "02" })
local other_key = key("other_ca")
local other = cert("other_ca", { subject_key = other_key, issuer_key = other_key,
  cn = "certmaint Other Fixture CA", is_ca = true, not_before = FROM, not_after = TO, serial = "03" })

local URLS = { ocsp_url = "http://127.0.0.1:8888/ocsp", crl_url = "http://127.0.0.1:8888/ca.crl" }
local function leaf(name, serial, extra)
  local o = { subject_key = key(name), names = { name:gsub("_", "-") .. ".example" }, issuer_cert = ca,
    issuer_key = ca_key, not_before = FROM, not_after = TO, serial = serial }
  for k, v in pairs(extra or {}) do o[k] = v end
  return cert(name, o)
end
local leaf_pem = leaf("leaf", "1001", URLS)
leaf("leaf_crl_only", "1002", { crl_url = URLS.crl_url })
leaf("leaf_must_staple", "1003", { ocsp_url = URLS.ocsp_url, must_staple = true })
local responder = leaf("responder", "2001", { ocsp_signing = true })
local responder_key = assert(io.open(out .. "/responder.key")):read("a")
local rogue = leaf("rogue_responder", "2002")
local rogue_key = assert(io.open(out .. "/rogue_responder.key")):read("a")

-- OCSP responses about leaf.pem ------------------------------------------
local function ocsp(name, o)
  local b = { issuer_cert = ca, issuer_key = ca_key, cert = leaf_pem, status = "good",
    this_update = T, next_update = T + 7 * DAY, produced_at = T }
  for k, v in pairs(o or {}) do b[k] = v or nil end -- false: leave out
  write(name .. ".der", assert(core.ocsp_response_build(b)))
end
ocsp("ocsp_good")
ocsp("ocsp_good_no_next", { next_update = false })
ocsp("ocsp_unknown", { status = "unknown" })
ocsp("ocsp_revoked_none", { status = "revoked", revoked_at = T - DAY })
for r = 0, 10 do
  if r ~= 7 then ocsp(string.format("ocsp_revoked_%d", r), { status = "revoked", revoked_at = T - DAY, reason = r }) end
end
ocsp("ocsp_stale", { this_update = T - 8 * DAY, next_update = T - DAY, produced_at = T - 8 * DAY })
ocsp("ocsp_notyet", { this_update = T + DAY, next_update = T + 8 * DAY, produced_at = T + DAY })
ocsp("ocsp_wrong_key", { issuer_cert = impostor, issuer_key = impostor_key })
ocsp("ocsp_other_issuer", { issuer_cert = other, issuer_key = other_key })
ocsp("ocsp_delegated", { responder_cert = responder, responder_key = responder_key, issuer_key = false })
ocsp("ocsp_delegated_no_eku", { responder_cert = rogue, responder_key = rogue_key, issuer_key = false })
local good = assert(io.open(out .. "/ocsp_good.der", "rb")):read("a")
write("ocsp_truncated.der", good:sub(1, #good // 2))
write("ocsp_trailing.der", good .. "\0")
write("ocsp_garbage.der", "this is not an OCSP response, it is a line of text\n")
-- OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] OPTIONAL }
for st, name in pairs { [1] = "malformedRequest", [2] = "internalError", [3] = "tryLater",
  [5] = "sigRequired", [6] = "unauthorized" } do
  write("ocsp_status_" .. name .. ".der", string.char(0x30, 0x03, 0x0a, 0x01, st))
end

-- CRLs ---------------------------------------------------------------------
local function crl(name, o)
  local b = { issuer_cert = ca, issuer_key = ca_key, this_update = T, next_update = T + 7 * DAY, number = "10" }
  for k, v in pairs(o or {}) do b[k] = v or nil end -- false: leave out
  local der = assert(core.crl_build(b))
  write(name .. ".der", der)
  return der
end
local entries = { { serial = "1001", revoked_at = T - DAY, reason = "keyCompromise" } }
for i = 1, 40 do -- others around it: every reason, and none
  local r = (i % 12) - 1 -- -1 .. 10
  entries[#entries + 1] = { serial = string.format("%x", 0x3000 + i * 7), revoked_at = T - i * 3600,
    reason = (r >= 0 and r ~= 7) and r or nil }
end
entries[#entries + 1] = { serial = "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff", revoked_at = T - 2 * DAY }
crl("crl_empty", { number = "01" })
crl("crl_empty_no_next", { next_update = false, number = false })
local revoked = crl("crl_revoked", { entries = entries })
write("crl_revoked.pem", "-----BEGIN X509 CRL-----\n" ..
  assert(core.base64_encode(revoked)):gsub(("."):rep(64), "%0\n"):gsub("\n?$", "\n") ..
  "-----END X509 CRL-----\n")
crl("crl_not_listing", { entries = { { serial = "1002", revoked_at = T - DAY, reason = 4 } } })
crl("crl_wrong_signer", { issuer_cert = impostor, issuer_key = impostor_key, entries = entries })
crl("crl_other_issuer", { issuer_cert = other, issuer_key = other_key, entries = entries })
crl("crl_stale", { this_update = T - 8 * DAY, next_update = T - DAY, entries = entries })
crl("crl_notyet", { this_update = T + DAY, next_update = T + 8 * DAY })
write("crl_truncated.der", revoked:sub(1, #revoked - 40))
write("crl_trailing.der", revoked .. "\0\0")
write("crl_garbage.der", "this is not a CRL either\n")
LUA

# ---- with the openssl CLI: an OCSP request, a response and a CRL ----------
openssl ocsp -issuer "$out/ca.pem" -cert "$out/leaf.pem" -no_nonce -reqout "$out/openssl_request.der" \
  >/dev/null 2>&1
# openssl ca's index: leaf 1001 revoked for keyCompromise, the crl-only leaf valid
serial_dn() { openssl x509 -in "$1" -noout -subject -nameopt compat | sed 's/^subject=//'; }
printf 'R\t21240104000000Z\t251231000000Z,keyCompromise\t1001\tunknown\t%s\n' "$(serial_dn "$out/leaf.pem")" \
  >"$work/index.txt"
printf 'V\t21240104000000Z\t\t1002\tunknown\t%s\n' "$(serial_dn "$out/leaf_crl_only.pem")" >>"$work/index.txt"
openssl ocsp -index "$work/index.txt" -rsigner "$out/ca.pem" -rkey "$out/ca.key" -CA "$out/ca.pem" \
  -reqin "$out/openssl_request.der" -respout "$out/openssl_revoked.der" -ndays 36500 >/dev/null 2>&1
cat >"$work/ca.cnf" <<EOF
[ ca ]
default_ca = cm
[ cm ]
database = $work/index.txt
crlnumber = $work/crlnumber
default_md = sha256
default_crl_days = 36500
[ crl_ext ]
authorityKeyIdentifier = keyid
EOF
echo 20 >"$work/crlnumber"
openssl ca -gencrl -batch -config "$work/ca.cnf" -cert "$out/ca.pem" -keyfile "$out/ca.key" \
  -crlexts crl_ext -out "$work/openssl.crl.pem" 2>/dev/null
openssl crl -in "$work/openssl.crl.pem" -outform DER -out "$out/openssl_crl.der"

# TLS Feature variants from openssl (not the core's encoder): status_request
# alone, status_request_v2 alone (not Must-Staple), both; valid from when made, 100 years
for v in "status_request:status_request" "v2:status_request_v2" "both:status_request,status_request_v2"; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/tlsf.key" \
    -subj "/CN=tlsf-${v%%:*}.example" -addext "subjectAltName=DNS:tlsf-${v%%:*}.example" \
    -addext "tlsfeature=${v#*:}" -days 36500 -out "$out/tlsfeature_${v%%:*}.pem" 2>/dev/null
done

# ---- fuzz corpora: every response / CRL as a seed -------------------------
mkdir -p "$here/tests/fuzz/corpus/ocsp" "$here/tests/fuzz/corpus/crl"
rm -f "$here"/tests/fuzz/corpus/ocsp/fixture_* "$here"/tests/fuzz/corpus/crl/fixture_*
for f in "$out"/ocsp_*.der "$out"/openssl_revoked.der; do cp "$f" "$here/tests/fuzz/corpus/ocsp/fixture_$(basename "$f")"; done
for f in "$out"/crl_*.der "$out"/crl_*.pem "$out"/openssl_crl.der; do cp "$f" "$here/tests/fuzz/corpus/crl/fixture_$(basename "$f")"; done
# Must-Staple certificates for the fast path's differential harness, as DER
rm -f "$here"/tests/fuzz/corpus/x509_fastpath/fixture_ocsp_*
for f in "$out"/leaf_must_staple.pem "$out"/tlsfeature_*.pem; do
  openssl x509 -in "$f" -outform DER -out "$here/tests/fuzz/corpus/x509_fastpath/fixture_ocsp_$(basename "$f" .pem).der"
done
echo "wrote $(ls "$out" | wc -l) files to $out"
