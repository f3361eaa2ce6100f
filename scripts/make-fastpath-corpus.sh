#!/usr/bin/env bash
# make-fastpath-corpus.sh - seed tests/fuzz/corpus/x509_fastpath/ for the
# differential harness tests/fuzz/fuzz_x509_fastpath.c (DER fast path vs
# OpenSSL), with certificates of every shape the fast path handles or must
# decline: unusual DNs (RFC 2253 escapes, leading/trailing spaces,
# multi-valued RDNs, emailAddress/DC/UID, non-ASCII UTF8String, BMPString,
# an unknown attribute type), SAN kinds, AIA/CRL DP, CA flags, negative and
# high-bit serials, GeneralizedTime, RSA/RSA-PSS/Ed25519 signatures, the
# local CA's certificates (core.cert_issue) and bench/gen_store.c's.
#
#   scripts/make-fastpath-corpus.sh BUILD_DIR [OUTDIR]
#
# BUILD_DIR is a build tree (for lua/certmaint/core.so, built there if
# missing); bench/gen_store.c is compiled in a scratch directory.  Also copies the x509 fixtures
# and the x509_chain corpus.  Keys are fresh each run, so files differ from
# run to run; fuzz crashers are added by hand (named crash_*).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: $0 BUILD_DIR [OUTDIR]}
build=$(cd "$build" && pwd)
out=${2:-$here/tests/fuzz/corpus/x509_fastpath}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp "$here"/tests/fixtures/x509/*.pem "$here"/tests/fixtures/x509/*.der "$out/"
for f in "$here"/tests/fuzz/corpus/x509_chain/*; do cp "$f" "$out/chain_$(basename "$f")"; done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ca.key" \
  -subj "/C=DE/O=Fast Path CA/CN=Fast Path Root" -days 3650 -out "$work/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:1" 2>/dev/null
openssl x509 -in "$work/ca.pem" -outform DER -out "$out/ok_ca_root.der"

# leaf NAME SUBJ [req options...]: a leaf signed by the CA above, written as
# DER (leaf alone), DER chain (leaf + CA) and PEM chain.
leaf() {
  local name=$1 subj=$2; shift 2
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/l.key" \
    -subj "$subj" -out "$work/l.csr" "$@" 2>/dev/null
  openssl x509 -req -in "$work/l.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -days "${DAYS:-90}" -copy_extensions copyall ${SERIAL:+-set_serial "$SERIAL"} \
    -out "$work/l.pem" 2>/dev/null
  openssl x509 -in "$work/l.pem" -outform DER -out "$out/$name.der"
  cat "$out/$name.der" "$out/ok_ca_root.der" >"$out/${name}_chain.der"
  cat "$work/l.pem" "$work/ca.pem" >"$out/${name}_chain.pem"
}

san="subjectAltName=DNS:a.example,DNS:b.example,IP:192.0.2.7,IP:2001:db8::7,email:x@example.net,URI:https://u.example/"
aia="authorityInfoAccess=OCSP;URI:http://ocsp.example/,caIssuers;URI:http://ca.example/ca.der,OCSP;URI:http://ocsp2.example/"
crl="crlDistributionPoints=URI:http://crl.example/a.crl,URI:http://crl2.example/b.crl"

leaf ok_plain "/CN=plain.example" -addext "$san" -addext "$aia" -addext "$crl"
leaf ok_escapes '/CN=a\,b\+c"d\\e<f>g;h#i=j/O= lead/OU=trail /L=#hash/ST= /C=US' -addext "$san"
leaf ok_hash_first '/CN=#x/O=#/OU=a#b'
leaf ok_spaces '/CN=  two  /O= /OU=x y'
leaf ok_multivalued '/CN=mv.example+O=Multi+OU=Valued/C=FR/OU=second+L=Paris' -multivalue-rdn
leaf ok_attrs '/DC=com/DC=example/UID=jdoe/emailAddress=jdoe@example.com/serialNumber=12345/street=1 Main St/title=Dr/GN=John/SN=Doe/initials=JD/postalCode=12345/pseudonym=jd/dnQualifier=q/generationQualifier=III/description=desc/businessCategory=biz/CN=attrs.example'
leaf ok_jurisdiction '/jurisdictionC=US/jurisdictionST=Delaware/jurisdictionL=Dover/organizationIdentifier=VATDE-123/name=nm/CN=ev.example'
leaf decline_utf8 $'/CN=caf\xc3\xa9.example/O=Gr\xc3\xbc\xc3\x9fe' -utf8
leaf decline_bmp $'/CN=\xe6\x97\xa5\xe6\x9c\xac.example' -utf8 -config <(printf '[req]\ndistinguished_name=dn\nstring_mask=default\n[dn]\n')
leaf decline_unknown_oid '/myAttr=foo/CN=oid.example' -config <(printf 'oid_section=oids\n[oids]\nmyAttr=1.2.3.4\n[req]\ndistinguished_name=dn\n[dn]\n')
leaf ok_cn_only '/CN=cn-only.example'
leaf ok_cn_last '/CN=first.example/O=x/CN=last.example'
leaf ok_no_subject '/' -addext "subjectAltName=critical,DNS:nosubject.example"
leaf ok_ip_only '/CN=ip.example' -addext "subjectAltName=IP:10.0.0.1,IP:::1"
leaf decline_othername '/CN=other.example' -addext "subjectAltName=DNS:o.example,otherName:1.2.3.4;UTF8:hello"
leaf decline_dirname '/CN=dir.example' -addext "subjectAltName=dirName:dir_sect" -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[dir_sect]\nCN=inner\n')
leaf ok_ca_leaf '/CN=ca-leaf.example' -addext "basicConstraints=critical,CA:TRUE,pathlen:3"
leaf ok_not_ca '/CN=not-ca.example' -addext "basicConstraints=CA:FALSE"
leaf ok_crl_reasons '/CN=crl.example' -addext "crlDistributionPoints=crldp_sect" -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[crldp_sect]\nfullname=URI:http://crl.example/r.crl\nreasons=keyCompromise,CACompromise\n')
leaf ok_crl_relative '/CN=crl.example' -addext "crlDistributionPoints=crldp_sect" -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[crldp_sect]\nrelativename=rel_sect\n[rel_sect]\nCN=rel\n')
SERIAL=-5 leaf ok_negative_serial '/CN=neg.example'
SERIAL=-256 leaf ok_negative_serial256 '/CN=neg.example'
SERIAL=0x80 leaf ok_highbit_serial '/CN=hi.example'
SERIAL=0 leaf ok_zero_serial '/CN=zero.example'
DAYS=40000 leaf ok_generalized_time '/CN=far.example'

# RSA, RSA-PSS (parameters are a SEQUENCE) and Ed25519 self-signed.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/r.key" -subj "/CN=rsa.example" \
  -days 30 -outform DER -out "$out/ok_rsa.der" 2>/dev/null
openssl req -x509 -key "$work/r.key" -subj "/CN=pss.example" -sigopt rsa_padding_mode:pss \
  -days 30 -outform DER -out "$out/ok_rsa_pss.der" 2>/dev/null
openssl req -x509 -newkey ed25519 -nodes -keyout "$work/e.key" -subj "/CN=ed.example" \
  -days 30 -outform DER -out "$out/ok_ed25519.der" 2>/dev/null

# The local CA (core.cert_issue), as certmaint.issuer.internal issues.
[ -f "$build/lua/certmaint/core.so" ] || cmake --build "$build" -j2 --target certmaint_module >/dev/null
LUA_CPATH="$build/lua/?.so;;" lua5.4 - "$out" <<'EOF'
local core = require("certmaint.core")
local out = arg[1]
local ca_key = assert(core.key_generate())
local now = os.time()
local ca = assert(core.cert_issue{ issuer_key = ca_key, cn = "certmaint local CA", is_ca = true,
  path_len = 0, not_before = now - 60, not_after = now + 86400 * 365 })
local function write(name, pem)
  local f = assert(io.open(out .. "/" .. name .. ".pem", "wb")); f:write(pem); f:close()
end
write("localca_root", ca)
local leaf_key = assert(core.key_generate())
write("localca_leaf_chain", assert(core.cert_issue{ subject_key = leaf_key, issuer_cert = ca,
  issuer_key = ca_key, names = { "site.test", "www.site.test", "127.0.0.1" },
  not_before = now - 60, not_after = now + 86400 * 90, ocsp_url = "http://127.0.0.1:8888/ocsp",
  crl_url = "http://127.0.0.1:8888/crl" }) .. ca)
write("localca_ocsp_signer", assert(core.cert_issue{ subject_key = leaf_key, issuer_cert = ca,
  issuer_key = ca_key, cn = "OCSP responder", ocsp_signing = true,
  not_before = now - 60, not_after = now + 86400 * 30 }))
EOF
for f in "$out"/localca_*.pem; do
  openssl x509 -in "$f" -outform DER -out "${f%.pem}.der"
done

# bench/gen_store.c's certificates (what startup.sh loads).
cc -O2 -std=c11 -D_GNU_SOURCE -o "$work/gen_store" "$here/bench/gen_store.c" \
  $(pkg-config --cflags --libs libcrypto)
mkdir -p "$work/store"
"$work/gen_store" init "$work/store" >/dev/null
"$work/gen_store" certs "$work/store" "$work/store" bench 1 2 >/dev/null
n=0
while IFS= read -r crt; do
  n=$((n + 1))
  cp "$crt" "$out/genstore_$n.pem"
  openssl x509 -in "$crt" -outform DER -out "$out/genstore_$n.der"
done < <(find "$work/store" -name '*.crt' | sort)
echo "corpus: $(ls "$out" | wc -l) files in ${out#"$here"/}"
