package webrtcapi

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// Loggers routes pion's logs to slog: its errors as warnings, its
// warnings and infos at debug level (pion warns about much that is normal
// on a server), its debug and trace output nowhere. It is the
// logging.LoggerFactory of New's SettingEngine, and of anything else of
// pion's the endpoint makes (its ICE UDP mux).
type Loggers struct {
	Log   *slog.Logger // nil: slog.Default()
	Layer string       // the messages' prefix: "fanout" logs "fanout: pion: …"
}

// NewLogger returns the logger of one pion scope.
func (p Loggers) NewLogger(scope string) logging.LeveledLogger {
	log := p.Log
	if log == nil {
		log = slog.Default()
	}
	prefix := "pion: "
	if p.Layer != "" {
		prefix = p.Layer + ": pion: "
	}
	return pionLogger{log: log.With("pion", scope), prefix: prefix}
}

type pionLogger struct {
	log    *slog.Logger
	prefix string
}

func (l pionLogger) logf(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, l.prefix+fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(string)                      {}
func (l pionLogger) Tracef(string, ...any)             {}
func (l pionLogger) Debug(string)                      {}
func (l pionLogger) Debugf(string, ...any)             {}
func (l pionLogger) Info(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l pionLogger) Error(msg string)                  { l.logf(slog.LevelWarn, "%s", msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.logf(slog.LevelWarn, format, args...) }
