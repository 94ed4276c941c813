#!/bin/sh
# Installs Debian's cross C toolchain for linux/arm64 (gcc-aarch64-linux-gnu
# and libc6-dev-arm64-cross) when it is missing, and prints the compiler's
# name. The release's arm64 binary is built with cgo (the pkcs11 backend
# dlopens a vendor's module), so Go needs a C compiler for arm64; the image
# builder uses this one for GOARCH=arm64 on an amd64 host.
#
# Runs unattended (CI runs as root with no stdin); as another user it uses
# sudo when there is one. On an arm64 host nothing is needed: prints gcc.
set -eu

case "$(uname -m)" in
aarch64 | arm64)
	echo gcc
	exit 0
	;;
esac
cc=aarch64-linux-gnu-gcc
if ! command -v "$cc" >/dev/null || [ ! -f /usr/aarch64-linux-gnu/include/stdio.h ]; then
	if ! command -v apt-get >/dev/null; then
		echo "cross.sh: $cc or arm64 glibc headers missing and there is no apt-get: install a cross compiler for aarch64-linux-gnu with glibc 2.36 or older, and pass it as CC_arm64" >&2
		exit 1
	fi
	as_root=""
	if [ "$(id -u)" -ne 0 ]; then
		if ! command -v sudo >/dev/null; then
			echo "cross.sh: $cc is missing; installing it needs root (or sudo): apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" >&2
			exit 1
		fi
		as_root="sudo -n"
	fi
	echo "installing gcc-aarch64-linux-gnu and libc6-dev-arm64-cross with apt-get" >&2
	install() {
		$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross >&2 </dev/null
	}
	# The package lists may be missing (a fresh container) or stale.
	if ! install; then
		$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 </dev/null
		install
	fi
fi
echo "$cc"
