package dist

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestRelease runs release.sh into a temporary directory and checks what it made: the three
// archives, each with a static, stripped binary for its platform and the files beside it,
// man pages included;
// SHA256SUMS, which sha256sum -c verifies; the CycloneDX SBOM, which names every module that
// go.mod requires at its version; and the amd64 binary, which prints the stamped version,
// commit and build date.
func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: release.sh cross-builds three stripped binaries and installs cyclonedx-gomod (a minute or more); run without -short")
	}
	for _, tool := range []string{"git", "tar", "gzip", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("release.sh needs %s: %v", tool, err)
		}
	}
	const version = "9.9.9-test"
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", "release.sh", out, version)
	// The build date is the commit's time, not the caller's; cyclonedx-gomod goes into the
	// test's own directory, not the caller's GOBIN.
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=", "GOBIN="+t.TempDir())
	log, err := cmd.CombinedOutput()
	t.Logf("release.sh in %s:\n%s", time.Since(start).Round(time.Second), log)
	if err != nil {
		t.Fatalf("release.sh: %v", err)
	}

	head, commitTime := git(t, "rev-parse", "HEAD"), git(t, "log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%SZ")
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sbomName := "ssanet-" + version + ".cdx.json"
	want := []string{"SHA256SUMS", "ssanet-" + version + "-linux-amd64.tar.gz", "ssanet-" + version + "-linux-arm64.tar.gz",
		"ssanet-" + version + "-linux-armv7.tar.gz", sbomName}
	sort.Strings(names)
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("release.sh wrote %v, want %v", names, want)
	}

	check := exec.Command("sha256sum", "-c", "--strict", "SHA256SUMS")
	check.Dir = out
	sums, err := check.CombinedOutput()
	if err != nil || strings.Count(string(sums), ": OK\n") != 4 {
		t.Errorf("sha256sum -c SHA256SUMS: %v\n%s", err, sums)
	}

	license, err := os.ReadFile("../LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		arch    string
		machine elf.Machine
		goarm   string
	}{
		{"amd64", elf.EM_X86_64, ""},
		{"arm64", elf.EM_AARCH64, ""},
		{"armv7", elf.EM_ARM, "7"},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			dir := "ssanet-" + version + "-linux-" + tc.arch
			files := untar(t, filepath.Join(out, dir+".tar.gz"))
			var got, pages []string
			for name := range files {
				if page, ok := strings.CutPrefix(name, dir+"/man/"); ok && strings.HasSuffix(page, ".1") {
					pages = append(pages, page)
					continue
				}
				got = append(got, name)
			}
			sort.Strings(got)
			sort.Strings(pages)
			// One page per command (ssanet man, tested in cmd/ssanet): the root's and one
			// subcommand's stand for them here.
			for _, page := range []string{"ssanet.1", "ssanet-ssa-approve.1", "ssanet-completion-bash.1"} {
				if !slices.Contains(pages, page) {
					t.Errorf("archive lacks man/%s; its man pages: %v", page, pages)
				}
			}
			if ssanet1 := string(files[dir+"/man/ssanet.1"]); !strings.Contains(ssanet1, `.TH "SSANET" "1"`) || !strings.Contains(ssanet1, "ssanet "+version) {
				t.Errorf("man/ssanet.1 is no man page of ssanet %s:\n%.300s", version, ssanet1)
			}
			wantFiles := []string{dir + "/LICENSE", dir + "/README.md", dir + "/ssanet", dir + "/ssanet.service", dir + "/ssanet.sysusers"}
			if strings.Join(got, " ") != strings.Join(wantFiles, " ") {
				t.Fatalf("archive holds %v, want %v", got, wantFiles)
			}
			if !bytes.Equal(files[dir+"/LICENSE"], license) {
				t.Error("the archive's LICENSE is not the repository's")
			}
			bin := files[dir+"/ssanet"]
			f, err := elf.NewFile(bytes.NewReader(bin))
			if err != nil {
				t.Fatal(err)
			}
			if f.Machine != tc.machine {
				t.Errorf("binary for %v, want %v", f.Machine, tc.machine)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("binary is dynamically linked (%v)", p.Type)
				}
			}
			if f.Section(".symtab") != nil {
				t.Error("binary is not stripped: it has a .symtab")
			}
			info, err := buildinfo.Read(bytes.NewReader(bin))
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			for k, v := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOARM": tc.goarm} {
				if settings[k] != v {
					t.Errorf("build setting %s=%q, want %q", k, settings[k], v)
				}
			}
			t.Logf("linux/%s: stripped binary %.1f MiB, archive %d files", tc.arch, float64(len(bin))/(1<<20), len(files))
			if tc.arch != "amd64" {
				return
			}
			path := filepath.Join(t.TempDir(), "ssanet")
			if err := os.WriteFile(path, bin, 0o755); err != nil {
				t.Fatal(err)
			}
			outb, err := exec.Command(path, "version", "--json").Output()
			if err != nil {
				t.Fatalf("ssanet version --json: %v", err)
			}
			var v struct {
				Version, Commit, Go string
				BuildDate           string `json:"build_date"`
			}
			if err := json.Unmarshal(outb, &v); err != nil {
				t.Fatalf("ssanet version --json: %v: %s", err, outb)
			}
			if v.Version != version || strings.TrimSuffix(v.Commit, "-dirty") != head || v.BuildDate != commitTime || v.Go != info.GoVersion {
				t.Errorf("ssanet version --json: %s\nwant version %s, commit %s, build date %s, go %s", outb, version, head, commitTime, info.GoVersion)
			}
		})
	}

	// The SBOM names every module that go.mod requires, at its version.
	b, err := os.ReadFile(filepath.Join(out, sbomName))
	if err != nil {
		t.Fatal(err)
	}
	var sbom struct {
		BOMFormat   string `json:"bomFormat"`
		SpecVersion string `json:"specVersion"`
		Metadata    struct {
			Component struct{ Name string }
		}
		Components []struct{ Name, Version string }
	}
	if err := json.Unmarshal(b, &sbom); err != nil {
		t.Fatal(err)
	}
	if sbom.BOMFormat != "CycloneDX" || sbom.SpecVersion == "" || sbom.Metadata.Component.Name != "github.com/ssanet/ssanet" {
		t.Errorf("SBOM: format %q, spec %q, component %q; want CycloneDX of github.com/ssanet/ssanet", sbom.BOMFormat, sbom.SpecVersion, sbom.Metadata.Component.Name)
	}
	listed := map[string]bool{}
	for _, c := range sbom.Components {
		listed[c.Name+"@"+c.Version] = true
	}
	var mod struct {
		Require []struct{ Path, Version string }
	}
	if err := json.Unmarshal([]byte(goCmd(t, "mod", "edit", "-json", "../go.mod")), &mod); err != nil {
		t.Fatal(err)
	}
	if len(mod.Require) == 0 {
		t.Fatal("go.mod requires nothing?")
	}
	for _, r := range mod.Require {
		if !listed[r.Path+"@"+r.Version] {
			t.Errorf("SBOM does not list %s %s from go.mod", r.Path, r.Version)
		}
	}
	t.Logf("SBOM: %d components, go.mod: %d requirements", len(sbom.Components), len(mod.Require))
}

// untar returns the regular files of a tar.gz by name.
func untar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = b
	}
}

func git(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

func goCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go %v: %v", args, err)
	}
	return string(out)
}
