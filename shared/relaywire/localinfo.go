package relaywire

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// LocalInfoFile is the name of the one-machine relay settings file in the
// data directory.
const LocalInfoFile = "relay.json"

// LocalInfo is what a gateway leaves in its data directory so that a
// function on the same machine can reach it without configuration.
type LocalInfo struct {
	Secret      string `json:"secret"`
	Fingerprint string `json:"fingerprint"` // lowercase hex SHA-256 of the certificate DER
	Addr        string `json:"addr"`        // e.g. "127.0.0.1:4433"
}

// WriteLocalInfo writes li to dir/relay.json, mode 0600, replacing the
// file atomically.
func WriteLocalInfo(dir string, li LocalInfo) error {
	b, err := json.MarshalIndent(li, "", "  ")
	if err != nil {
		return fmt.Errorf("relaywire: local info: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("relaywire: local info: %w", err)
	}
	f, err := os.CreateTemp(dir, LocalInfoFile+".*")
	if err != nil {
		return fmt.Errorf("relaywire: local info: %w", err)
	}
	defer os.Remove(f.Name()) // after a successful rename it is gone already
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("relaywire: local info: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("relaywire: local info: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("relaywire: local info: %w", err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, LocalInfoFile)); err != nil {
		return fmt.Errorf("relaywire: local info: %w", err)
	}
	return nil
}

// ReadLocalInfo reads dir/relay.json. The error wraps fs.ErrNotExist when
// there is no such file.
func ReadLocalInfo(dir string) (LocalInfo, error) {
	var li LocalInfo
	b, err := os.ReadFile(filepath.Join(dir, LocalInfoFile))
	if err != nil {
		return li, fmt.Errorf("relaywire: local info: %w", err)
	}
	if err := json.Unmarshal(b, &li); err != nil {
		return li, fmt.Errorf("relaywire: local info %s: %w", filepath.Join(dir, LocalInfoFile), err)
	}
	return li, nil
}
