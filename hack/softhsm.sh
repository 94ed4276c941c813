#!/bin/sh
# Installs SoftHSM2 and OpenSC (pkcs11-tool), the real PKCS#11 module and
# tool the pkcs11 backend's tests run against, from the distribution's
# packages when they are missing, and prints the path of SoftHSM2's
# module (libsofthsm2.so). The tests make their own tokens, each in a
# temporary directory of its own (SOFTHSM2_CONF); nothing here touches
# the system's tokens. They fail, rather than skip, when the module is
# missing (only `go test -short` skips them).
#
# Runs unattended (CI runs as root with no stdin); as another user it uses
# sudo when there is one.
set -eu

find_module() {
	for m in \
		/usr/lib/softhsm/libsofthsm2.so \
		/usr/lib/*/softhsm/libsofthsm2.so \
		/usr/local/lib/softhsm/libsofthsm2.so \
		/usr/lib64/pkcs11/libsofthsm2.so \
		/usr/lib/pkcs11/libsofthsm2.so; do
		if [ -f "$m" ]; then
			echo "$m"
			return 0
		fi
	done
	return 1
}

if ! find_module >/dev/null || ! command -v softhsm2-util >/dev/null || ! command -v pkcs11-tool >/dev/null; then
	if ! command -v apt-get >/dev/null; then
		echo "softhsm.sh: SoftHSM2 or OpenSC is missing and there is no apt-get: install softhsm2 and opensc (pkcs11-tool) with the system's package manager" >&2
		exit 1
	fi
	as_root=""
	if [ "$(id -u)" -ne 0 ]; then
		if ! command -v sudo >/dev/null; then
			echo "softhsm.sh: SoftHSM2 or OpenSC is missing; installing them needs root (or sudo): apt-get install softhsm2 opensc" >&2
			exit 1
		fi
		as_root="sudo -n"
	fi
	echo "installing softhsm2 and opensc with apt-get" >&2
	install() {
		$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends softhsm2 opensc >&2 </dev/null
	}
	# The package lists may be missing (a fresh container) or stale:
	# update them if the install fails.
	if ! install; then
		$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 </dev/null
		install
	fi
fi

if ! module=$(find_module); then
	echo "softhsm.sh: softhsm2 is installed but libsofthsm2.so is in none of the usual places" >&2
	exit 1
fi
echo "$module"
