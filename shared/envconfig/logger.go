package envconfig

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// NewLogger returns the logger LS_LOG_LEVEL and LS_LOG_FORMAT ask for,
// writing to standard error.
func NewLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("LS_LOG_LEVEL: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("LS_LOG_FORMAT: want text or json, got %q", format)
}
