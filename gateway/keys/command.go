package keys

import (
	"errors"
	"fmt"
	"io"
)

// ErrUsage is wrapped by the errors Command returns for a malformed
// command line; its text is the usage.
var ErrUsage = errors.New(`usage:
  gateway keys add [channel]       create a key (channel defaults to 77)
  gateway keys list                print every key
  gateway keys rotate [channel]    give a key a new secret (channel defaults to 77)
  gateway keys remove <channel>    delete a key`)

// Command runs the "keys" subcommand of the gateway on s: args are the
// words after "keys". add and rotate print the new stream key, list prints
// every key, one per line, sorted by channel; they print keys alone so
// scripts can read them. "help" prints the usage.
func Command(args []string, s *Store, out io.Writer) error {
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
		ch, err := channelArg(name, rest, true)
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
	case "remove":
		ch, err := channelArg(name, rest, false)
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

// channelArg reads the channel argument of command name. When optional and
// absent it is DefaultChannel.
func channelArg(name string, args []string, optional bool) (uint32, error) {
	switch {
	case len(args) == 0 && optional:
		return DefaultChannel, nil
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
