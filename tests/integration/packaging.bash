# Shared by the packaging tests (rockspec.sh, deb.sh; sourced, not a test):
# a copy of the sources a package is built from, so the build's own files
# (build.luarocks/, debian/tmp, obj-*) never land in the checkout.
# copy_source_tree DEST: what the CMake build, the rockspec and debian/ read
copy_source_tree() {
  local dest=$1
  mkdir -p "$dest"
  (cd "$SRC" && cp -a CMakeLists.txt README.md certmaint-dev-1.rockspec cmake core lua policies man packaging \
    debian "$dest"/)
}
