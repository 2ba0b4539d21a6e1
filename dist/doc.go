// Package dist owns how ssanet is shipped: the release script (release.sh: static archives,
// SHA256SUMS, CycloneDX SBOM), the hardened systemd unit and its sysusers file, and the
// container recipe. It holds no code of the agent; its tests run the script and check the
// unit with systemd's own tools.
package dist
