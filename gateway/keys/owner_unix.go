//go:build unix

package keys

import (
	"io/fs"
	"os"
	"syscall"
)

// keepOwner gives the new key file f the owner of ref: the file it
// replaces, or the data directory. It matters when an administrator runs
// "gateway keys" as root (as "fly ssh console" does) beside a gateway that
// runs as another user: the file must stay readable by the gateway. Only
// root can change owners; anyone else writes files of their own, as before.
func keepOwner(f *os.File, ref fs.FileInfo) {
	st, ok := ref.Sys().(*syscall.Stat_t)
	if !ok || os.Geteuid() != 0 {
		return
	}
	f.Chown(int(st.Uid), int(st.Gid)) // best effort: the write itself succeeded
}
