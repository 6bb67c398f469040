package keys

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// openTemp opens a store in a fresh data directory and returns it with the
// directory.
func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestOpenCreatesPrivateDirectoryAndFile(t *testing.T) {
	s, dir := openTemp(t)
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("data directory mode = %o, want 700", got)
	}
	path := filepath.Join(dir, FileName)
	if got := mode(t, path); got != 0o600 {
		t.Errorf("key file mode = %o, want 600", got)
	}
	if keys := s.List(); len(keys) != 0 {
		t.Errorf("new store holds %v, want nothing", keys)
	}
	if _, err := s.Add(5); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, path); got != 0o600 {
		t.Errorf("key file mode after a change = %o, want 600", got)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("data directory holds %d entries, want only %s (no leftover temporary files)", len(entries), FileName)
	}
}

func TestOpenNarrowsAKeyFileOthersCanRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, []byte(`{"keys": [{"channel": 9, "secret": "abc"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := mode(t, path); got != 0o600 {
		t.Errorf("key file mode = %o, want 600", got)
	}
	if secret, ok := s.Secret(9); !ok || secret != "abc" {
		t.Errorf("Secret(9) = %q, %v; want the key from the file", secret, ok)
	}
}

func TestKeysPersistAcrossOpen(t *testing.T) {
	s, dir := openTemp(t)
	a, err := s.Add(77)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Add(3)
	if err != nil {
		t.Fatal(err)
	}

	again, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Key{b, a} // sorted by channel
	got := again.List()
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("List() after reopening = %v, want %v", got, want)
	}
	if secret, ok := again.Secret(77); !ok || secret != a.Secret {
		t.Errorf("Secret(77) = %q, %v; want %q", secret, ok, a.Secret)
	}
	if _, ok := again.Secret(1); ok {
		t.Errorf("Secret(1) found a key for a channel that has none")
	}
}

func TestEnsureDefaultCreatesOnceThenReuses(t *testing.T) {
	s, dir := openTemp(t)
	first, created, err := s.EnsureDefault(defaultChannel)
	if err != nil {
		t.Fatal(err)
	}
	if !created || first.Channel != defaultChannel {
		t.Fatalf("first EnsureDefault = %+v, created %v; want a new key for channel 77", first, created)
	}

	second, created, err := s.EnsureDefault(defaultChannel)
	if err != nil || created || second != first {
		t.Fatalf("second EnsureDefault = %+v, created %v, %v; want %+v again", second, created, err, first)
	}

	reopened, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	third, created, err := reopened.EnsureDefault(defaultChannel)
	if err != nil || created || third != first {
		t.Fatalf("EnsureDefault after restart = %+v, created %v, %v; want %+v", third, created, err, first)
	}
}

func TestEnsureDefaultKeepsAStoreThatHasOtherKeys(t *testing.T) {
	s, _ := openTemp(t)
	k9, _ := s.Add(9)
	s.Add(12)
	got, created, err := s.EnsureDefault(defaultChannel)
	if err != nil || created || got != k9 {
		t.Fatalf("EnsureDefault = %+v, created %v, %v; want the lowest channel's key %+v", got, created, err, k9)
	}
	if _, ok := s.Secret(defaultChannel); ok {
		t.Errorf("EnsureDefault added a key for channel 77 to a store that had keys")
	}
}

func TestRotateChangesTheSecret(t *testing.T) {
	s, dir := openTemp(t)
	old, _ := s.Add(77)
	rotated, err := s.Rotate(77)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Channel != 77 || rotated.Secret == old.Secret {
		t.Fatalf("Rotate = %+v, want a new secret for channel 77 (old %q)", rotated, old.Secret)
	}
	if secret, _ := s.Secret(77); secret != rotated.Secret {
		t.Errorf("Secret(77) = %q after rotation, want %q", secret, rotated.Secret)
	}
	reopened, _ := Open(dir)
	if secret, _ := reopened.Secret(77); secret != rotated.Secret {
		t.Errorf("rotation was not saved: Secret(77) = %q after reopening", secret)
	}
}

func TestChangesAreRefusedClearly(t *testing.T) {
	s, _ := openTemp(t)
	s.Add(77)
	tests := []struct {
		name   string
		change func() error
		is     error
		msg    string
	}{
		{"adding a channel that has a key", func() error { _, err := s.Add(77); return err }, ErrExists, "keys: channel 77: already has a key"},
		{"rotating a channel without a key", func() error { _, err := s.Rotate(8); return err }, ErrNotFound, "keys: channel 8: has no key"},
		{"removing a channel without a key", func() error { return s.Remove(8) }, ErrNotFound, "keys: channel 8: has no key"},
		{"adding channel 0", func() error { _, err := s.Add(0); return err }, nil, "channel id 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.change()
			if err == nil {
				t.Fatal("no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
		})
	}
}

func TestRemoveDeletesTheKey(t *testing.T) {
	s, dir := openTemp(t)
	s.Add(77)
	kept, _ := s.Add(78)
	if err := s.Remove(77); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Secret(77); ok {
		t.Errorf("Secret(77) still found after Remove")
	}
	reopened, _ := Open(dir)
	if got := reopened.List(); len(got) != 1 || got[0] != kept {
		t.Errorf("List() after reopening = %v, want only %v", got, kept)
	}
}

func TestAFailedWriteChangesNothing(t *testing.T) {
	s, dir := openTemp(t)
	k, _ := s.Add(77)
	// Put a file where the directory was: the temporary file cannot be
	// created, whatever the privileges of the test.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rotate(77); err == nil {
		t.Fatal("Rotate succeeded without a directory to write to")
	}
	if _, err := s.Add(78); err == nil {
		t.Fatal("Add succeeded without a directory to write to")
	}
	if secret, ok := s.Secret(77); !ok || secret != k.Secret {
		t.Errorf("Secret(77) = %q, %v after failed writes; want the old secret %q", secret, ok, k.Secret)
	}
	if _, ok := s.Secret(78); ok {
		t.Errorf("a key whose write failed is in the store")
	}
}

func TestAnotherProcessChangesAreSeen(t *testing.T) {
	gateway, dir := openTemp(t)
	k, _, err := gateway.EnsureDefault(defaultChannel)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Open(dir) // "gateway keys rotate" run beside the gateway
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := cli.Rotate(defaultChannel)
	if err != nil {
		t.Fatal(err)
	}
	if secret, _ := gateway.Secret(defaultChannel); secret != rotated.Secret {
		t.Errorf("running store answers %q after rotation elsewhere, want %q (old %q)", secret, rotated.Secret, k.Secret)
	}
	added, _ := cli.Add(5)
	if got := gateway.List(); len(got) != 2 || got[0] != added {
		t.Errorf("running store lists %v after an add elsewhere, want %v first", got, added)
	}
}

func TestDamagedKeyFileIsAnError(t *testing.T) {
	tests := []struct {
		name    string
		content string
		wantErr string
	}{
		{"empty file", "", "EOF"},
		{"not JSON", "channel=77 secret=abc\n", "invalid character"},
		{"truncated", `{"keys": [{"channel": 77, "sec`, "unexpected EOF"},
		{"no keys list", `{}`, `no "keys" list`},
		{"unknown field", `{"keys": [], "extra": 1}`, "unknown field"},
		{"trailing data", `{"keys": []} {}`, "after the JSON object"},
		{"channel 0", `{"keys": [{"channel": 0, "secret": "a"}]}`, "key 1: channel id 0"},
		{"empty secret", `{"keys": [{"channel": 1, "secret": ""}]}`, "key 1: channel 1: secret is empty"},
		{"secret with a space", `{"keys": [{"channel": 1, "secret": "a b"}]}`, "key 1: channel 1: secret has a space"},
		{"duplicate channel", `{"keys": [{"channel": 1, "secret": "a"}, {"channel": 1, "secret": "b"}]}`, "key 2: channel 1 has two keys"},
		{"negative channel", `{"keys": [{"channel": -1, "secret": "a"}]}`, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir)
			if err == nil {
				t.Fatal("Open succeeded on a damaged key file")
			}
			for _, want := range []string{"keys: ", path, "damaged key file", tt.wantErr} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			after, _ := os.ReadFile(path)
			if string(after) != tt.content {
				t.Errorf("Open rewrote the damaged file to %q", after)
			}
		})
	}
}

func TestARunningStoreKeepsItsKeysWhenTheFileIsDamaged(t *testing.T) {
	s, dir := openTemp(t)
	k, _ := s.Add(77)
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if secret, ok := s.Secret(77); !ok || secret != k.Secret {
		t.Errorf("Secret(77) = %q, %v; want the keys last read", secret, ok)
	}
	if _, err := s.Add(78); err == nil || !strings.Contains(err.Error(), "damaged key file") {
		t.Errorf("Add on a damaged file: %v; want the damage reported", err)
	}
}

func TestStaticStoreHoldsOneKeyAndRefusesChanges(t *testing.T) {
	k := Key{Channel: 12, Secret: "fromenv"}
	s := NewStatic(k)
	if secret, ok := s.Secret(12); !ok || secret != "fromenv" {
		t.Errorf("Secret(12) = %q, %v; want the static secret", secret, ok)
	}
	if _, ok := s.Secret(defaultChannel); ok {
		t.Errorf("static store has a key for channel 77")
	}
	if got := s.List(); len(got) != 1 || got[0] != k {
		t.Errorf("List() = %v, want [%v]", got, k)
	}
	got, created, err := s.EnsureDefault(defaultChannel)
	if err != nil || created || got != k {
		t.Errorf("EnsureDefault = %+v, created %v, %v; want the static key, nothing created", got, created, err)
	}

	const msg = "keys: LS_STREAM_KEY is set; keys are not stored"
	changes := map[string]func() error{
		"Add":    func() error { _, err := s.Add(5); return err },
		"Rotate": func() error { _, err := s.Rotate(12); return err },
		"Remove": func() error { return s.Remove(12) },
	}
	for name, change := range changes {
		err := change()
		if !errors.Is(err, ErrStatic) || err.Error() != msg {
			t.Errorf("%s on a static store: %v; want %q", name, err, msg)
		}
	}
	if secret, _ := s.Secret(12); secret != "fromenv" {
		t.Errorf("static key changed to %q", secret)
	}
}

func TestConcurrentLookupsAndRotations(t *testing.T) {
	s, dir := openTemp(t)
	s.Add(77)
	other, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if secret, ok := s.Secret(77); !ok || len(secret) != 40 {
					t.Errorf("Secret(77) = %q, %v during rotations", secret, ok)
					return
				}
				s.List()
			}
		})
	}
	for _, st := range []*Store{s, other} {
		wg.Go(func() {
			for range 20 {
				if _, err := st.Rotate(77); err != nil {
					t.Errorf("Rotate: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestPrivateChannels(t *testing.T) {
	s, dir := openTemp(t)
	k, _ := s.Add(77)
	s.Add(5)
	path := filepath.Join(dir, FileName)
	if s.Private(77) || s.Private(5) || s.Private(9) {
		t.Fatal("a new key's channel is private")
	}
	if data, _ := os.ReadFile(path); strings.Contains(string(data), "private") {
		t.Errorf("the key file names privacy while every channel is public:\n%s", data)
	}

	if err := s.SetPrivate(77, true); err != nil {
		t.Fatal(err)
	}
	if !s.Private(77) || s.Private(5) {
		t.Fatalf("Private(77) = %v, Private(5) = %v after making 77 private", s.Private(77), s.Private(5))
	}
	if secret, _ := s.Secret(77); secret != k.Secret {
		t.Errorf("making the channel private changed its secret")
	}
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), `"private": true`) || strings.Count(string(data), "private") != 1 {
		t.Errorf("key file after making 77 private:\n%s", data)
	}
	if got := mode(t, path); got != 0o600 {
		t.Errorf("key file mode = %o, want 600", got)
	}

	rotated, err := s.Rotate(77)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Private(77) {
		t.Error("rotation made a private channel public")
	}
	reopened, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reopened.Private(77) || reopened.Private(5) {
		t.Error("privacy was not saved")
	}
	if secret, _ := reopened.Secret(77); secret != rotated.Secret {
		t.Error("the rotated secret was not saved with the privacy")
	}

	if err := s.SetPrivate(77, false); err != nil {
		t.Fatal(err)
	}
	if s.Private(77) || reopened.Private(77) {
		t.Error("the channel is still private after making it public (here or in the other store)")
	}
	s.SetPrivate(77, true)
	if err := s.Remove(77); err != nil {
		t.Fatal(err)
	}
	if s.Private(77) {
		t.Error("a removed channel is private")
	}
	if _, err := s.Add(77); err != nil || s.Private(77) {
		t.Errorf("a key added again: %v, private %v; want a public channel", err, s.Private(77))
	}
}

func TestPrivacyChangesAreRefusedClearly(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.SetPrivate(8, true); !errors.Is(err, ErrNotFound) || err.Error() != "keys: channel 8: has no key" {
		t.Errorf("SetPrivate on a channel without a key: %v", err)
	}
	if err := s.SetPrivate(0, true); err == nil || !strings.Contains(err.Error(), "channel id 0") {
		t.Errorf("SetPrivate(0): %v", err)
	}
	st := NewStatic(Key{Channel: 12, Secret: "fromenv"})
	if st.Private(12) {
		t.Error("the static channel is private")
	}
	for _, private := range []bool{true, false} {
		if err := st.SetPrivate(12, private); !errors.Is(err, ErrStatic) {
			t.Errorf("SetPrivate(12, %v) on a static store: %v; want %v", private, err, ErrStatic)
		}
	}
}

func TestAKeyFileWithPrivacyIsRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	content := `{"keys": [{"channel": 9, "secret": "abc", "private": true}, {"channel": 10, "secret": "def", "private": false}, {"channel": 11, "secret": "ghi"}]}`
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Private(9) || s.Private(10) || s.Private(11) {
		t.Errorf("Private(9, 10, 11) = %v, %v, %v; want true, false, false", s.Private(9), s.Private(10), s.Private(11))
	}
	if _, err := s.Add(12); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if strings.Count(string(data), `"private": true`) != 1 || strings.Contains(string(data), `"private": false`) {
		t.Errorf("key file rewritten as:\n%s", data)
	}

	if err := os.WriteFile(path, []byte(`{"keys": [{"channel": 9, "secret": "abc", "private": "yes"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "damaged key file") {
		t.Errorf("a key file with private as a string: %v", err)
	}
}

func TestAnotherProcessPrivacyChangesAreSeen(t *testing.T) {
	gateway, dir := openTemp(t)
	gateway.Add(77)
	cli, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.SetPrivate(77, true); err != nil {
		t.Fatal(err)
	}
	if !gateway.Private(77) {
		t.Error("running store does not see the channel made private elsewhere")
	}
}
