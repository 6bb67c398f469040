package viewtoken

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFileName is the name of the signing key's file in the data directory.
const KeyFileName = "viewer-token.key"

// KeySize is the length of the signing key in bytes.
const KeySize = 32

// LoadOrCreateKey returns the signing key kept in dataDir, making it (32
// bytes from crypto/rand, in a file of mode 0600, dataDir mode 0700 if
// missing) when there is none. Two processes making it at once end up with
// the same key: the file appears whole or not at all and is never
// replaced. A key file of another size is an error, never overwritten.
func LoadOrCreateKey(dataDir string) ([]byte, error) {
	if dataDir == "" {
		return nil, errors.New("viewtoken: data directory not set")
	}
	path := filepath.Join(dataDir, KeyFileName)
	key, err := readKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("viewtoken: create data directory: %w", err)
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("viewtoken: make signing key: %w", err)
	}
	if err := createKey(dataDir, path, key); errors.Is(err, fs.ErrExist) {
		return readKey(path) // made by another process meanwhile
	} else if err != nil {
		return nil, err
	}
	return key, nil
}

// readKey reads the key file, narrowing its mode to 0600.
func readKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("viewtoken: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("viewtoken: %s: damaged signing key: %d bytes, want %d (remove it to make a new key; tokens issued so far then stop working)", path, len(key), KeySize)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&^0o600 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("viewtoken: %s: restrict mode to 0600: %w", path, err)
		}
	}
	return key, nil
}

// createKey writes key to a private temporary file, then links it at path,
// which fails with fs.ErrExist if another process got there first.
func createKey(dir, path string, key []byte) (err error) {
	f, err := os.CreateTemp(dir, "."+KeyFileName+".*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("viewtoken: write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(key); err != nil {
		return fmt.Errorf("viewtoken: write %s: %w", path, err)
	}
	// Keep the file readable by the gateway when an administrator makes
	// it as root (see keepOwner).
	if ref, err := os.Stat(dir); err == nil {
		keepOwner(f, ref)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("viewtoken: write %s: %w", path, err)
	}
	if err := os.Link(f.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		return fmt.Errorf("viewtoken: write %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync() // best effort: the file is in place either way
		d.Close()
	}
	return nil
}
