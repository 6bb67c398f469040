package keys

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// FileName is the name of the key file inside the data directory.
const FileName = "keys.json"

var (
	// ErrExists is returned by Add when the channel already has a key.
	ErrExists = errors.New("already has a key")
	// ErrNotFound is returned by Rotate and Remove when the channel has
	// no key.
	ErrNotFound = errors.New("has no key")
	// ErrStatic is returned by every change to a store made by NewStatic.
	ErrStatic = errors.New("LS_STREAM_KEY is set; keys are not stored")
)

// Store holds the stream keys of all channels. It is safe for concurrent
// use.
//
// A store opened on a data directory keeps the keys in FileName there and
// picks up changes other processes make to it (such as "gateway keys
// rotate" run beside a running gateway): every lookup checks whether the
// file was replaced and reads it again if so. When that read fails, lookups
// keep answering from the keys last read; changes return the error.
// Changes from two processes at the same instant are not merged: the last
// write wins.
//
// A key can also mark its channel private: viewers then need a viewer
// token (see gateway/viewtoken). The key file says so with "private": true
// on the key, left out for public channels.
type Store struct {
	path string // key file; "" for a static store

	mu   sync.Mutex
	keys map[uint32]entry
	seen fs.FileInfo // the key file as last read or written
}

// entry is what the store holds for one channel.
type entry struct {
	secret  string
	private bool // viewers need a viewer token
}

// fileData is the layout of the key file.
type fileData struct {
	Keys []fileKey `json:"keys"`
}

type fileKey struct {
	Channel uint32 `json:"channel"`
	Secret  string `json:"secret"`
	Private bool   `json:"private,omitempty"` // viewers need a viewer token
}

// Open opens the key store in dir, the data directory. It creates dir
// (mode 0700) and an empty key file (mode 0600) when they are missing, and
// narrows the mode of an existing key file to 0600; an existing directory
// keeps its mode. A key file that cannot be read is an error: Open never
// starts over with an empty store.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("keys: data directory not set")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys: create data directory: %w", err)
	}
	s := &Store{path: filepath.Join(dir, FileName)}
	err := s.refresh()
	if errors.Is(err, fs.ErrNotExist) {
		s.keys = map[uint32]entry{}
		err = s.write(s.keys)
	}
	if err != nil {
		return nil, err
	}
	if s.seen.Mode().Perm()&^0o600 != 0 {
		if err := os.Chmod(s.path, 0o600); err != nil {
			return nil, fmt.Errorf("keys: %s: restrict mode to 0600: %w", s.path, err)
		}
	}
	return s, nil
}

// NewStatic returns a store that holds exactly k, in memory, and refuses
// every change with ErrStatic. It serves LS_STREAM_KEY; k comes from Parse.
// Its channel is public.
func NewStatic(k Key) *Store {
	return &Store{keys: map[uint32]entry{k.Channel: {secret: k.Secret}}}
}

// Secret returns the secret of channel's stream key, and whether the
// channel has one.
func (s *Store) Secret(channel uint32) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.refresh() // on failure, answer from the keys last read
	e, ok := s.keys[channel]
	return e.secret, ok
}

// Private reports whether channel is private: its viewers need a viewer
// token. A channel without a key is not private.
func (s *Store) Private(channel uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.refresh() // on failure, answer from the keys last read
	return s.keys[channel].private
}

// List returns every key, sorted by channel.
func (s *Store) List() []Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.refresh() // on failure, answer from the keys last read
	return sorted(s.keys)
}

// Add creates a key with a new secret for channel, which must not have one.
func (s *Store) Add(channel uint32) (Key, error) {
	return s.change(channel, opAdd)
}

// Rotate gives channel's key a new secret. The old secret stops working at
// once; a publisher already streaming is not disconnected.
func (s *Store) Rotate(channel uint32) (Key, error) {
	return s.change(channel, opRotate)
}

// Remove deletes channel's key.
func (s *Store) Remove(channel uint32) error {
	_, err := s.change(channel, opRemove)
	return err
}

// SetPrivate makes channel private (its viewers then need a viewer token)
// or public. The channel must have a key; its secret does not change.
// Viewers already watching are not disconnected.
func (s *Store) SetPrivate(channel uint32, private bool) error {
	o := opPublic
	if private {
		o = opPrivate
	}
	_, err := s.change(channel, o)
	return err
}

// EnsureDefault makes sure the store holds a key. When the store is empty
// it creates a key for channel and returns it with created true. Otherwise
// it returns channel's key if there is one, else the key with the lowest
// channel, with created false. The gateway calls it on every start with
// its default channel (LS_DEFAULT_CHANNEL) and prints OBSInstructions when
// created is true.
func (s *Store) EnsureDefault(channel uint32) (k Key, created bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refresh(); err != nil {
		return Key{}, false, err
	}
	if e, ok := s.keys[channel]; ok {
		return Key{Channel: channel, Secret: e.secret}, false, nil
	}
	if len(s.keys) > 0 {
		return sorted(s.keys)[0], false, nil
	}
	k, err = s.changeLocked(channel, opAdd)
	if err != nil {
		return Key{}, false, err
	}
	return k, true, nil
}

// op is a change to one channel's key.
type op int

const (
	opAdd     op = iota // a new key; the channel has none
	opRotate            // a new secret for the channel's key
	opRemove            // no key for the channel
	opPrivate           // the channel needs viewer tokens
	opPublic            // anyone may watch the channel
)

// change applies o to channel's key and returns the new key. The store and
// the file change together or not at all.
func (s *Store) change(channel uint32, o op) (Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refresh(); err != nil {
		return Key{}, err
	}
	return s.changeLocked(channel, o)
}

// changeLocked is change for a caller that holds s.mu and has refreshed.
func (s *Store) changeLocked(channel uint32, o op) (Key, error) {
	if s.path == "" {
		return Key{}, fmt.Errorf("keys: %w", ErrStatic)
	}
	if channel == 0 {
		return Key{}, errors.New("keys: channel id 0 is not allowed")
	}
	old, exists := s.keys[channel]
	switch {
	case o == opAdd && exists:
		return Key{}, fmt.Errorf("keys: channel %d: %w", channel, ErrExists)
	case o != opAdd && !exists:
		return Key{}, fmt.Errorf("keys: channel %d: %w", channel, ErrNotFound)
	}
	next := maps.Clone(s.keys)
	if next == nil {
		next = map[uint32]entry{}
	}
	k := Key{Channel: channel, Secret: old.secret}
	switch o {
	case opRemove:
		delete(next, channel)
	case opPrivate, opPublic:
		next[channel] = entry{secret: old.secret, private: o == opPrivate}
	default: // opAdd, opRotate: a new secret, the channel's privacy kept
		var err error
		if k, err = Generate(channel); err != nil {
			return Key{}, err
		}
		next[channel] = entry{secret: k.Secret, private: old.private}
	}
	if err := s.write(next); err != nil {
		return Key{}, err
	}
	s.keys = next
	return k, nil
}

// refresh reads the key file again when it changed since it was last read
// or written. It does nothing for a static store. The caller holds s.mu.
func (s *Store) refresh() error {
	if s.path == "" {
		return nil
	}
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if s.seen != nil && os.SameFile(fi, s.seen) &&
		fi.ModTime().Equal(s.seen.ModTime()) && fi.Size() == s.seen.Size() {
		return nil
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("keys: read %s: %w", s.path, err)
	}
	keys, err := decode(data)
	if err != nil {
		return fmt.Errorf("keys: %s: damaged key file (fix or remove it): %w", s.path, err)
	}
	s.keys, s.seen = keys, fi
	return nil
}

// decode parses and checks the contents of a key file.
func decode(data []byte) (map[uint32]entry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var fd fileData
	if err := dec.Decode(&fd); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the JSON object")
	}
	if fd.Keys == nil {
		return nil, errors.New(`no "keys" list`)
	}
	keys := make(map[uint32]entry, len(fd.Keys))
	for i, fk := range fd.Keys {
		k := Key{Channel: fk.Channel, Secret: fk.Secret}
		if err := k.validate(); err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		if _, dup := keys[k.Channel]; dup {
			return nil, fmt.Errorf("key %d: channel %d has two keys", i+1, k.Channel)
		}
		keys[k.Channel] = entry{secret: k.Secret, private: fk.Private}
	}
	return keys, nil
}

// write replaces the key file with keys atomically: a private temporary
// file in the same directory, synced, then renamed over the old one. The
// caller holds s.mu.
func (s *Store) write(keys map[uint32]entry) (err error) {
	fd := fileData{Keys: []fileKey{}}
	for _, k := range sorted(keys) {
		fd.Keys = append(fd.Keys, fileKey{Channel: k.Channel, Secret: k.Secret, Private: keys[k.Channel].private})
	}
	data, err := json.MarshalIndent(fd, "", "  ")
	if err != nil {
		return fmt.Errorf("keys: encode: %w", err)
	}
	data = append(data, '\n')

	dir := filepath.Dir(s.path)
	f, err := os.CreateTemp(dir, "."+FileName+".*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("keys: write %s: %w", s.path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("keys: write %s: %w", s.path, err)
	}
	// Keep the owner of the file replaced, or of the directory for a new
	// one (see keepOwner).
	if ref := s.seen; ref != nil {
		keepOwner(f, ref)
	} else if ref, err := os.Stat(dir); err == nil {
		keepOwner(f, ref)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("keys: write %s: %w", s.path, err)
	}
	// Rename keeps the inode, so this is the file a later refresh sees
	// unless someone else replaces it.
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("keys: write %s: %w", s.path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("keys: write %s: %w", s.path, err)
	}
	if err = os.Rename(f.Name(), s.path); err != nil {
		return fmt.Errorf("keys: write %s: %w", s.path, err)
	}
	// Make the rename itself durable. Some file systems cannot sync a
	// directory; the file is in place either way, so that is not an error.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	s.seen = fi
	return nil
}

// sorted returns the keys of m ordered by channel.
func sorted(m map[uint32]entry) []Key {
	out := make([]Key, 0, len(m))
	for ch, e := range m {
		out = append(out, Key{Channel: ch, Secret: e.secret})
	}
	slices.SortFunc(out, func(a, b Key) int {
		switch {
		case a.Channel < b.Channel:
			return -1
		case a.Channel > b.Channel:
			return 1
		}
		return 0
	})
	return out
}
