package keys

import (
	"errors"
	"fmt"
	"io"
)

// Usage lists the forms of the "keys" subcommand, one per line.
const Usage = `  gateway keys add [channel]       create a key
  gateway keys list                print every key
  gateway keys rotate [channel]    give a key a new secret
  gateway keys remove <channel>    delete a key
  gateway keys private [channel]   viewers need a viewer token (gateway tokens issue)
  gateway keys public [channel]    anyone may watch (the default)
A missing channel is the default channel (LS_DEFAULT_CHANNEL, 77 unless set).`

// ErrUsage is wrapped by the errors Command returns for a malformed
// command line; its text is the usage.
var ErrUsage = errors.New("usage:\n" + Usage)

// Command runs the "keys" subcommand of the gateway on s: args are the
// words after "keys". add, rotate, private and public act on
// defaultChannel (the gateway's LS_DEFAULT_CHANNEL) when args name no
// channel. add and rotate print the new stream key, list prints every key,
// one per line, sorted by channel; they print keys alone so scripts can
// read them. private and public say what they did. "help" prints the
// usage.
func Command(args []string, s *Store, defaultChannel uint32, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("keys: missing command: %w", ErrUsage)
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		_, err := fmt.Fprintln(out, ErrUsage.Error())
		return err
	case "list":
		if len(rest) != 0 {
			return fmt.Errorf("keys: list takes no arguments: %w", ErrUsage)
		}
		for _, k := range s.List() {
			if _, err := fmt.Fprintln(out, k); err != nil {
				return err
			}
		}
		return nil
	case "add", "rotate":
		ch, err := channelArg(name, rest, defaultChannel)
		if err != nil {
			return err
		}
		var k Key
		if name == "add" {
			k, err = s.Add(ch)
		} else {
			k, err = s.Rotate(ch)
		}
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, k)
		return err
	case "private", "public":
		ch, err := channelArg(name, rest, defaultChannel)
		if err != nil {
			return err
		}
		if err := s.SetPrivate(ch, name == "private"); err != nil {
			return err
		}
		if name == "private" {
			_, err = fmt.Fprintf(out, "channel %d is private: viewers need a viewer token (gateway tokens issue %d)\n", ch, ch)
		} else {
			_, err = fmt.Fprintf(out, "channel %d is public: anyone may watch it\n", ch)
		}
		return err
	case "remove":
		ch, err := channelArg(name, rest, 0)
		if err != nil {
			return err
		}
		if err := s.Remove(ch); err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "removed the key of channel %d\n", ch)
		return err
	}
	return fmt.Errorf("keys: unknown command %q: %w", name, ErrUsage)
}

// channelArg reads the channel argument of command name. When absent it is
// def; a def of 0 means the channel must be given.
func channelArg(name string, args []string, def uint32) (uint32, error) {
	switch {
	case len(args) == 0 && def != 0:
		return def, nil
	case len(args) == 0:
		return 0, fmt.Errorf("keys: %s needs a channel: %w", name, ErrUsage)
	case len(args) > 1:
		return 0, fmt.Errorf("keys: %s takes one channel, got %d arguments: %w", name, len(args), ErrUsage)
	}
	ch, err := parseChannel(args[0])
	if err != nil {
		return 0, fmt.Errorf("keys: %s: %w", name, err)
	}
	return ch, nil
}
