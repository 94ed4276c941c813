# Sourced by the build scripts: the pinned versions, and building a test
# server once into the cache outside the repository.
# shellcheck shell=sh

. "$(dirname "$0")/versions.env"
cache="$HOME/.cache/trousseau"

# build_once NAME VERSION FUNC builds NAME at VERSION unless the cache has
# it, and prints the binary's path. FUNC is called in a scratch directory
# holding a throwaway module, with the path to write the binary to; the
# result is moved into place only when complete, so an interrupted build
# never leaves a partial binary in the cache.
build_once() {
	bin="$cache/$1/$2/$1"
	if [ ! -x "$bin" ]; then
		echo "building $1 $2 into $(dirname "$bin")" >&2
		mkdir -p "$(dirname "$bin")"
		work=$(mktemp -d)
		trap 'rm -rf "$work"' EXIT
		trap 'exit 1' INT TERM
		# No workspace or inherited flags: the scratch module alone decides.
		(cd "$work" && go mod init scratch >/dev/null 2>&1 && GOWORK=off GOFLAGS=-mod=mod "$3" "$work/$1.partial")
		mv -f "$work/$1.partial" "$bin"
		rm -rf "$work"
		trap - EXIT INT TERM
	fi
	echo "$bin"
}
