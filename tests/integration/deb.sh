#!/usr/bin/env bash
# The Debian package: `dpkg-buildpackage -b` in a copy of the sources, then
# `dpkg -i` in a clean root, where the installed certmaint runs the shipped
# policy (`certmaint once`, internal CA) as the user its postinst made.
#
# The clean root. debootstrap would fetch from a mirror on every run (tests
# reach nothing but 127.0.0.1), and its minbase bootstrap alone took 143 s on
# this machine from the configured apt source, before the dependencies and
# the package build (~45 s): past a CI budget of 3 minutes for this test. So
# the root is made from this Debian 12 machine's own installed packages,
# with a real dpkg database: the Essential set (what every Debian system has
# before anything is installed) plus the closure of the package's Depends
# and Pre-Depends, each package's files and its status entry copied from the
# host, nothing else. Then the real `dpkg -i` runs inside it (chroot): it
# checks the .deb's Depends against that database and runs the maintainer
# scripts, and the binary runs with the root's libraries only. A dependency
# the control file forgets (lua-filesystem for lfs.so, say) is missing from
# the root and `certmaint once` fails here. Needs root (chroot, mknod).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/packaging.bash"
if [ "$(id -u)" -ne 0 ]; then
  echo "deb.sh needs root (chroot into the clean root); the CI and developer machines run as root" >&2
  exit 1
fi
ARCH=$(dpkg --print-architecture)
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

# --- build ----------------------------------------------------------------------
copy_source_tree "$WORK/build/certmaint"
set +e
(cd "$WORK/build/certmaint" && DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -b -us -uc) \
  >"$WORK/build.log" 2>&1
rc=$?
set -e
version=$(cd "$SRC" && dpkg-parsechangelog -S Version)
deb=$WORK/build/certmaint_${version}_${ARCH}.deb
check "dpkg-buildpackage -b builds certmaint_${version}_${ARCH}.deb" test $rc -eq 0 -a -f "$deb"
if [ ! -f "$deb" ]; then tail -40 "$WORK/build.log"; finish; fi
check "the package's version is the project's (debian/changelog = certmaint --version)" \
  test "certmaint $version" = "$("$BIN" --version)"
check "the checkout stays clean (the build ran in a copy)" \
  test ! -e "$SRC/debian/certmaint" -a ! -e "$SRC/debian/.debhelper" -a ! -e "$SRC/obj-x86_64-linux-gnu"
dpkg-deb -c "$deb" | awk '{print $6}' >"$WORK/contents"
for f in ./usr/bin/certmaint ./usr/lib/$MULTIARCH/lua/5.4/certmaint/core.so ./usr/share/lua/5.4/certmaint/testing.lua \
  ./usr/share/certmaint/policies/local.lua ./usr/share/man/man1/certmaint.1.gz ./usr/share/man/man5/certmaint-policy.5.gz \
  ./lib/systemd/system/certmaint.service ./usr/lib/sysusers.d/certmaint.conf ./usr/lib/tmpfiles.d/certmaint.conf; do
  check "the package holds $f" grep -qx "$f" "$WORK/contents"
done
check "... and no certmaint-bench" bash -c "! grep -q certmaint-bench '$WORK/contents'"
depends=$(dpkg-deb -f "$deb" Depends)
depends_on_all() {
  local p
  for p in "$@"; do grep -Eq "(^|, )$p( |,|\$)" <<<"$depends" || return 1; done
}
check "Depends names the run-time libraries and lua-filesystem: $depends" \
  depends_on_all liblua5.4-0 libssl3 libcurl4 libjansson4 libidn2-0 lua-filesystem adduser procps

# --- the clean root ---------------------------------------------------------------
R=$WORK/root
declare -A arch_of provider want
while IFS=$'\t' read -r pkg arch status provides; do
  [ "$status" = "ii " ] || continue
  [ "$arch" = "$ARCH" ] || [ "$arch" = all ] || continue
  arch_of[$pkg]=$arch
  IFS=',' read -ra provs <<<"$provides"
  for pv in "${provs[@]}"; do
    pv=${pv%%(*}; pv=${pv// /}
    [ -n "$pv" ] && [ -z "${provider[$pv]:-}" ] && provider[$pv]=$pkg
  done
done < <(dpkg-query -W -f='${Package}\t${Architecture}\t${db:Status-Abbrev}\t${Provides}\n')

# pkg:arch for dpkg-query (Multi-Arch: same packages need it), plain for "all"
qualified() { if [ "${arch_of[$1]}" = all ]; then echo "$1"; else echo "$1:${arch_of[$1]}"; fi; }
# resolve DEPENDS-FIELD: each item's first alternative this machine has
queue=()
add_deps() {
  local item alt name
  IFS=',' read -ra items <<<"$1"
  for item in "${items[@]}"; do
    [ -n "${item// /}" ] || continue
    local chosen=
    IFS='|' read -ra alts <<<"$item"
    for alt in "${alts[@]}"; do
      name=${alt%%(*}; name=${name%%[*}; name=${name// /}; name=${name%%:*}
      if [ -n "${arch_of[$name]:-}" ]; then chosen=$name; break; fi
      if [ -n "${provider[$name]:-}" ]; then chosen=${provider[$name]}; break; fi
    done
    if [ -z "$chosen" ]; then echo "deb.sh: no installed package satisfies '$item'" >&2; return 1; fi
    if [ -z "${want[$chosen]:-}" ]; then want[$chosen]=1; queue+=("$chosen"); fi
  done
}
while IFS=$'\t' read -r pkg essential; do
  if [ "$essential" = yes ] && [ -n "${arch_of[$pkg]:-}" ] && [ -z "${want[$pkg]:-}" ]; then
    want[$pkg]=1; queue+=("$pkg")
  fi
done < <(dpkg-query -W -f='${Package}\t${Essential}\n')
add_deps "$depends, $(dpkg-deb -f "$deb" Pre-Depends)"
i=0
while [ $i -lt ${#queue[@]} ]; do
  p=${queue[$i]}; i=$((i + 1))
  add_deps "$(dpkg-query -W -f='${Depends}, ${Pre-Depends}' "$(qualified "$p")")"
done
check "a closure of ${#queue[@]} packages: the Essential set and what certmaint depends on" test ${#queue[@]} -gt 20

# merged /usr as on Debian 12, /dev/null for the maintainer scripts
mkdir -p "$R"/usr/{bin,sbin,lib,lib64} "$R"/dev "$R"/tmp "$R"/var/lib/dpkg/{info,updates,triggers,alternatives} \
  "$R"/var/log "$R"/etc
for d in bin sbin lib lib64; do ln -s usr/$d "$R/$d"; done
chmod 1777 "$R/tmp"
mknod -m 0666 "$R/dev/null" c 1 3
: >"$R/var/lib/dpkg/status"
: >"$R/var/lib/dpkg/available"
for p in "${queue[@]}"; do
  q=$(qualified "$p")
  dpkg-query -L "$q" | grep -Ev '^/(bin|sbin|lib|lib32|lib64|libx32)$' >>"$WORK/files"
  { dpkg-query -s "$q"; echo; } >>"$R/var/lib/dpkg/status"
  for s in list md5sums conffiles preinst postinst prerm postrm shlibs symbols triggers templates config; do
    for f in "/var/lib/dpkg/info/$p.$s" "/var/lib/dpkg/info/$q.$s"; do
      if [ -e "$f" ]; then cp -a "$f" "$R/var/lib/dpkg/info/"; fi
    done
  done
done
# (files a dpkg path-exclude kept off this machine are missing here too)
tar -C / --no-recursion --ignore-failed-read -cf - -T "$WORK/files" 2>/dev/null | tar -C "$R" -xf -
# a fresh system's accounts: base-passwd's master files, then shadow from them
cp /usr/share/base-passwd/passwd.master "$R/etc/passwd"
cp /usr/share/base-passwd/group.master "$R/etc/group"
chroot "$R" /usr/sbin/pwconv
chroot "$R" /usr/sbin/grpconv
# and the PAM stack libpam-runtime's postinst writes (pam-auth-update): adduser
# runs chfn, which asks PAM
if [ -n "${want[libpam-runtime]:-}" ]; then cp -a /etc/pam.d/common-* "$R/etc/pam.d/"; fi
check "the root is not the host: no lua5.4, no busted, no openssl in it" \
  bash -c "[ ! -e '$R/usr/bin/lua5.4' ] && [ ! -e '$R/usr/bin/busted' ] && [ ! -e '$R/usr/bin/openssl' ]"
check "the root's dpkg sees its own packages only" \
  bash -c "[ \$(chroot '$R' dpkg-query -W -f='\${Package}\n' | wc -l) -eq ${#queue[@]} ]"

# --- install and run ---------------------------------------------------------------
cp "$deb" "$R/tmp/"
set +e
chroot "$R" dpkg -i "/tmp/$(basename "$deb")" >"$WORK/install.log" 2>&1
rc=$?
set -e
check "dpkg -i in the clean root: its Depends are met, its scripts run" test $rc -eq 0
if [ $rc -ne 0 ]; then cat "$WORK/install.log"; finish; fi
check "dpkg says certmaint is installed" \
  bash -c "chroot '$R' dpkg-query -W -f='\${db:Status-Abbrev}' certmaint | grep -qx 'ii '"
check "postinst made the system user certmaint, no login shell" \
  bash -c "chroot '$R' getent passwd certmaint | grep -Eq '^certmaint:x:[0-9]+:[0-9]+:[^:]*:/var/lib/certmaint:/usr/sbin/nologin$'"
check "... and its storage root /var/lib/certmaint, 0700, its own" \
  test "$(chroot "$R" stat -c '%a %U %G' /var/lib/certmaint)" = "700 certmaint certmaint"
check "/etc/certmaint is there for the policy; the unit waits for one (ConditionPathExists)" \
  bash -c "[ -d '$R/etc/certmaint' ] && grep -qx 'ConditionPathExists=/etc/certmaint/policy.lua' '$R/lib/systemd/system/certmaint.service'"
check "the unit runs /usr/bin/certmaint on /etc/certmaint/policy.lua" \
  grep -qx 'ExecStart=/usr/bin/certmaint run /etc/certmaint/policy.lua' "$R/lib/systemd/system/certmaint.service"
unit=$R/lib/systemd/system/certmaint.service
exec_paths() { sed -n 's/^Exec[A-Za-z]*=[-@+!:]*\([^ ]*\).*/\1/p' "$unit"; }
unit_programs_in_root() {
  local x
  for x in $(exec_paths); do [ -x "$R$x" ] || { echo "not in the root: $x"; return 1; }; done
}
check "every program the unit runs is in the root: $(exec_paths | tr '\n' ' ')" unit_programs_in_root
# the unit as installed, its binary's path pointed into the root (systemd-analyze
# checks that ExecStart's program exists)
sed "s|/usr/bin/certmaint|$R/usr/bin/certmaint|g" "$unit" >"$WORK/certmaint.service"
set +e
systemd-analyze verify --man=no "$WORK/certmaint.service" >"$WORK/verify.out" 2>&1
rc=$?
set -e
check "systemd-analyze verify: the unit parses, no warning" bash -c "[ $rc -eq 0 ] && [ ! -s '$WORK/verify.out' ]"
[ -s "$WORK/verify.out" ] && cat "$WORK/verify.out"
exposure_at_most_2() { systemd-analyze security --offline=true --threshold=20 "$WORK/certmaint.service" >"$WORK/security.out" 2>&1; }
check "systemd-analyze security: exposure 2.0 or less (of 10)" exposure_at_most_2
grep -o 'Overall exposure level.*' "$WORK/security.out" || true
check "certmaint --version in the root" \
  test "$(chroot "$R" /usr/bin/certmaint --version 2>&1)" = "certmaint $version"

set +e
chroot --userspec=certmaint:certmaint "$R" /usr/bin/env -i PATH=/usr/bin:/bin CERTMAINT_DATA=/var/lib/certmaint \
  /usr/bin/certmaint once /usr/share/certmaint/policies/local.lua >"$WORK/once.out" 2>"$WORK/once.err"
rc=$?
set -e
check "certmaint once with the shipped local.lua, as certmaint: exit 0, four obtained" \
  bash -c "[ $rc -eq 0 ] && grep -q '^loaded 0, obtained 4,' '$WORK/once.out'"
[ $rc -eq 0 ] || { cat "$WORK/once.out" "$WORK/once.err"; }
check "... no error in its log" bash -c "! grep -q 'level=error' '$WORK/once.err'"
store=$R/var/lib/certmaint
crt=$store/certificates/local/localhost/localhost.crt
check "... the certificate chains to the local root it made" \
  openssl verify -CAfile "$store/pki/authorities/local/root.crt" -untrusted "$crt" "$crt"
check "... key 0600, owned by certmaint" \
  test "$(chroot "$R" stat -c '%a %U' /var/lib/certmaint/certificates/local/localhost/localhost.key)" = "600 certmaint"
set +e
chroot --userspec=certmaint:certmaint "$R" /usr/bin/env -i PATH=/usr/bin:/bin CERTMAINT_DATA=/var/lib/certmaint \
  /usr/bin/certmaint status /usr/share/certmaint/policies/local.lua --check >"$WORK/status.out" 2>&1
rc=$?
set -e
check "status --check in the root: OK, 4 certificates" \
  bash -c "[ $rc -eq 0 ] && grep -q '^certmaint OK: 4 certificates' '$WORK/status.out'"
[ $rc -eq 0 ] || cat "$WORK/status.out"

set +e
chroot "$R" dpkg --purge certmaint >"$WORK/purge.log" 2>&1
rc=$?
set -e
check "dpkg --purge removes the package" bash -c "[ $rc -eq 0 ] && [ ! -e '$R/usr/bin/certmaint' ]"
check "... and leaves the certificates, keys and the local CA in /var/lib/certmaint" test -s "$crt"
finish
