package relaywire

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestLocalInfoRoundTripsInAPrivateFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadLocalInfo(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
	want := LocalInfo{Secret: "s3cret", Fingerprint: "ab12", Addr: "127.0.0.1:4433"}
	if err := WriteLocalInfo(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadLocalInfo(dir)
	if err != nil || got != want {
		t.Fatalf("got %+v, %v", got, err)
	}
	st, err := os.Stat(filepath.Join(dir, "relay.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d files in the directory, want 1", len(entries))
	}
}
