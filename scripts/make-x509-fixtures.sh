#!/usr/bin/env bash
# make-x509-fixtures.sh - regenerate tests/fixtures/x509/ with the openssl CLI.
#
#   scripts/make-x509-fixtures.sh [OUTDIR]     (default: tests/fixtures/x509)
#
# ok_*  parse and must keep parsing: fixed names, serials and validity dates
#       (2024-01-01 .. 2124-01-01, so they never expire); only the keys change
#       from one run to the next.
# err_* are broken on purpose, each in one way its name says.
# Tests read facts (names, serials, dates, URLs) that this script fixes, so
# change both together.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/tests/fixtures/x509}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

start=20240101000000Z
end=21240101000000Z

# A minimal `openssl ca` setup: it is the only CLI path in OpenSSL 3.0 that
# takes explicit start and end dates.
ca_setup() { # dir
  mkdir -p "$1"
  : >"$1/index.txt"
  cat >"$1/ca.cnf" <<EOF
[ ca ]
default_ca = cm
[ cm ]
dir = $1
database = \$dir/index.txt
new_certs_dir = \$dir
serial = \$dir/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[ any ]
commonName = supplied
organizationName = optional
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = placeholder
[ v3_root ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ v3_intermediate ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ v3_leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:example.com, DNS:*.example.com, DNS:www.example.com, IP:192.0.2.1, IP:2001:db8:0:0:0:0:0:1
authorityInfoAccess = OCSP;URI:http://127.0.0.1:8888/ocsp, caIssuers;URI:http://127.0.0.1:8888/intermediate.der
crlDistributionPoints = URI:http://127.0.0.1:8888/intermediate.crl
[ v3_cn_only ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
EOF
}

# sign DIR SERIAL_HEX CSR SUBJECT EXTENSIONS OUT [ISSUER_CERT ISSUER_KEY | -selfsign KEY]
sign() {
  local dir=$1 serial=$2 csr=$3 subj=$4 ext=$5 outfile=$6
  shift 6
  echo "$serial" >"$dir/serial"
  openssl ca -batch -notext -preserveDN -config "$dir/ca.cnf" -in "$csr" -subj "$subj" \
    -startdate "$start" -enddate "$end" -extensions "$ext" -out "$outfile" "$@" 2>/dev/null
}

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca=$work/ca
ca_setup "$ca"

# root -> intermediate -> leaf, all P-256
key "$out/ok_root.key"
openssl req -new -config "$ca/ca.cnf" -key "$out/ok_root.key" -subj "/CN=certmaint test root" -out "$work/root.csr"
sign "$ca" 01 "$work/root.csr" "/O=certmaint tests/CN=certmaint test root" v3_root "$out/ok_root.pem" \
  -selfsign -keyfile "$out/ok_root.key"

key "$out/ok_intermediate.key"
openssl req -new -config "$ca/ca.cnf" -key "$out/ok_intermediate.key" -subj "/CN=x" -out "$work/int.csr"
sign "$ca" 02 "$work/int.csr" "/O=certmaint tests/CN=certmaint test intermediate" v3_intermediate \
  "$out/ok_intermediate.pem" -cert "$out/ok_root.pem" -keyfile "$out/ok_root.key"

key "$out/ok_leaf.key"
openssl req -new -config "$ca/ca.cnf" -key "$out/ok_leaf.key" -subj "/CN=x" -out "$work/leaf.csr"
sign "$ca" 0123456789abcdef0123456789abcdef "$work/leaf.csr" "/CN=example.com" v3_leaf \
  "$out/ok_leaf.pem" -cert "$out/ok_intermediate.pem" -keyfile "$out/ok_intermediate.key"

# a certificate with no SAN: names fall back to the subject CN
key "$out/ok_cn_only.key"
openssl req -new -config "$ca/ca.cnf" -key "$out/ok_cn_only.key" -subj "/CN=x" -out "$work/cn.csr"
sign "$ca" 0a "$work/cn.csr" "/O=certmaint tests/CN=cn-only.example.net" v3_cn_only \
  "$out/ok_cn_only.pem" -cert "$out/ok_intermediate.pem" -keyfile "$out/ok_intermediate.key"

# an RSA key that matches none of the certificates
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$out/ok_other_rsa.key" 2>/dev/null

# leaf + intermediate, as a CA hands it out and as certmagic stores it
cat "$out/ok_leaf.pem" "$out/ok_intermediate.pem" >"$out/ok_chain.pem"
# the same, as explanatory text around the blocks (`openssl x509 -subject`)
{
  echo "subject=CN = example.com"
  cat "$out/ok_leaf.pem"
  echo "issuer and intermediate follow"
  cat "$out/ok_intermediate.pem"
  echo
} >"$out/ok_chain_with_text.pem"
# DER certificates back to back
{
  openssl x509 -in "$out/ok_leaf.pem" -outform DER
  openssl x509 -in "$out/ok_intermediate.pem" -outform DER
} >"$out/ok_chain.der"
# CRLF line endings
sed 's/$/\r/' "$out/ok_chain.pem" >"$out/ok_chain_crlf.pem"

# --- broken on purpose ---------------------------------------------------
: >"$out/err_empty.pem"
printf ' \n\t\r\n   \n' >"$out/err_whitespace.pem"
printf 'this is not a certificate\n\x00\x01\x02\xff garbage \x7f\n' >"$out/err_garbage.pem"
cp "$out/err_garbage.pem" "$out/err_garbage.der"
: >"$out/err_empty.der"
# cut in the middle of the base64: no END line
head -c 400 "$out/ok_leaf.pem" >"$out/err_truncated.pem"
# the whole body, but the END line is gone
grep -v -- '-----END' "$out/ok_leaf.pem" >"$out/err_missing_end.pem"
# BEGIN and END intact, body lines missing: the DER is cut short
{ head -n 4 "$out/ok_leaf.pem"; tail -n 1 "$out/ok_leaf.pem"; } >"$out/err_truncated_body.pem"
# a PEM block that is not a certificate
openssl req -new -config "$ca/ca.cnf" -key "$out/ok_leaf.key" -subj "/CN=example.com" \
  -out "$out/err_not_cert.pem"
# a valid leaf, then a CERTIFICATE block whose base64 is not DER
{
  cat "$out/ok_leaf.pem"
  echo "-----BEGIN CERTIFICATE-----"
  printf 'this is base64 of something that is not DER at all' | openssl base64
  echo "-----END CERTIFICATE-----"
} >"$out/err_bad_second.pem"
# one CERTIFICATE block, base64 fine, content not DER
{
  echo "-----BEGIN CERTIFICATE-----"
  printf 'hello, I am not a certificate' | openssl base64
  echo "-----END CERTIFICATE-----"
} >"$out/err_not_der.pem"
# characters outside the base64 alphabet
sed '3s/^./*/' "$out/ok_leaf.pem" >"$out/err_bad_base64.pem"
# DER: a valid leaf followed by bytes that are no certificate
{ openssl x509 -in "$out/ok_leaf.pem" -outform DER; printf '\x30\x82\x01\x00junk'; } \
  >"$out/err_bad_second.der"

echo "fixtures written to $out"
