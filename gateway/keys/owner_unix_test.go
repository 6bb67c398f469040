//go:build unix

package keys

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestRootKeepsTheKeyFileOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can give files to another user")
	}
	const uid, gid = 4242, 4343
	dir := t.TempDir()
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir) // creates the file: it gets the directory's owner
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	checkOwner := func(when string) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: key file owned by %d:%d, want %d:%d", when, st.Uid, st.Gid, uid, gid)
		}
	}
	checkOwner("after Open")
	if _, err := s.Add(77); err != nil {
		t.Fatal(err)
	}
	checkOwner("after Add")
	if err := os.Chown(dir, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rotate(77); err != nil {
		t.Fatal(err)
	}
	checkOwner("after Rotate in a directory root owns")
}
