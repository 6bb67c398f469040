//go:build unix

package viewtoken

import (
	"io/fs"
	"os"
	"syscall"
)

// keepOwner gives the new key file f the owner of the data directory ref.
// It matters when an administrator runs "gateway tokens issue" as root (as
// "fly ssh console" does) before the gateway, which runs as another user,
// has made the key: the gateway must be able to read it. Only root can
// change owners.
func keepOwner(f *os.File, ref fs.FileInfo) {
	st, ok := ref.Sys().(*syscall.Stat_t)
	if !ok || os.Geteuid() != 0 {
		return
	}
	f.Chown(int(st.Uid), int(st.Gid)) // best effort
}
