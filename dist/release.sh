#!/usr/bin/env bash
# Release build of ssanet: static, stripped binaries (CGO_ENABLED=0, -trimpath) for the
# sensors' platforms, each in a tar.gz with LICENSE, README.md, the systemd unit and the man
# pages (man/, written by ssanet man from the CLI's definitions); a
# CycloneDX SBOM of the module's dependencies; SHA256SUMS over all of them.
#
#   dist/release.sh OUTDIR [VERSION]
#
# VERSION defaults to agent.Version (agent/version.go). The commit (with -dirty when the
# checkout has changes) and the build date are stamped in with -ldflags -X; the build date is
# the commit's time, or $SOURCE_DATE_EPOCH when set, so that the same commit builds the same
# archives byte for byte. Needs Go, git, tar, gzip and sha256sum; installs cyclonedx-gomod
# (pinned below) from the Go module proxy into $GOBIN. Tested by dist/release_test.go.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
export GOFLAGS="-mod=mod"

out=${1:?usage: dist/release.sh OUTDIR [VERSION]}
version=${2:-$(sed -n 's/^\tVersion *= "\(.*\)"$/\1/p' agent/version.go)}
case "$version" in
  ""|*[!A-Za-z0-9.+-]*) echo "release: version '$version' is not of the form 1.2.3[-rc.1]" >&2; exit 2;;
esac
cyclonedx_gomod=github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@v1.10.0

commit=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  commit="$commit-dirty"
fi
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
date=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
pkg=github.com/ssanet/ssanet/agent
ldflags="-s -w -buildid= -X $pkg.Version=$version -X $pkg.Commit=$commit -X $pkg.BuildDate=$date"

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

echo "ssanet $version, commit $commit, built $date, $(go version)"
# The man pages, from a build for this machine with the same stamps, dated the build date.
go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$stage/ssanet-host" ./cmd/ssanet
SOURCE_DATE_EPOCH=$epoch "$stage/ssanet-host" man "$stage/man"
for target in linux/amd64 linux/arm64 linux/arm/7; do
  IFS=/ read -r goos goarch goarm <<<"$target"
  arch=$goarch${goarm:+v$goarm}
  name=ssanet-$version-$goos-$arch
  mkdir "$stage/$name"
  CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch GOARM=$goarm \
    go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$stage/$name/ssanet" ./cmd/ssanet
  cp LICENSE README.md dist/ssanet.service dist/ssanet.sysusers "$stage/$name/"
  cp -r "$stage/man" "$stage/$name/man"
  chmod 0755 "$stage/$name/ssanet" "$stage/$name/man"
  chmod 0644 "$stage/$name/man/"*.1
  chmod 0644 "$stage/$name/LICENSE" "$stage/$name/README.md" "$stage/$name/ssanet.service" "$stage/$name/ssanet.sysusers"
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -C "$stage" -cf - "$name" |
    gzip -n -9 >"$out/$name.tar.gz"
  size=$(stat -c %s "$stage/$name/ssanet")
  printf '%-12s binary %d bytes (%s MiB), %s\n' "$goos/$arch" "$size" \
    "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')" "$name.tar.gz"
done

# The SBOM: every module of the build list (go.mod's require lines, test-only ones too), with
# the licences found in their sources.
gobin=${GOBIN:-$(go env GOPATH)/bin}
GOFLAGS= GOBIN="$gobin" go install "$cyclonedx_gomod"
sbom=ssanet-$version.cdx.json
"$gobin/cyclonedx-gomod" mod -json -test -licenses -noserial -notimestamp -output "$out/$sbom" . 2>"$stage/sbom.log" || {
  cat "$stage/sbom.log" >&2; exit 1
}
echo "SBOM (CycloneDX): $sbom"

(cd "$out" && sha256sum ssanet-"$version"-*.tar.gz "$sbom" >SHA256SUMS)
echo "checksums: SHA256SUMS (verify with: sha256sum -c SHA256SUMS)"
