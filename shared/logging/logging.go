// Package logging builds the services' *slog.Logger from LOG_LEVEL and
// LOG_FORMAT: JSON in containers, text on a terminal.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/connpipe/connpipe/shared/redact"
)

// New returns a logger writing to w. level is debug, info, warn or error;
// format is json, text or auto (text when w is a terminal).
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: Redact}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "", "auto":
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("LOG_FORMAT=%q: want json, text or auto", format)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Redact is the services' slog ReplaceAttr: the message and every string,
// error or Stringer value lose the password of any URL they quote
// (redact.Text), so no log line shows a secret even when an error
// from a library quotes an address whole.
func Redact(_ []string, a slog.Attr) slog.Attr {
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); strings.Contains(s, "@") {
			a.Value = slog.StringValue(redact.Text(s))
		}
	case slog.KindAny:
		var s string
		switch x := v.Any().(type) {
		case error:
			s = x.Error()
		case fmt.Stringer:
			s = x.String()
		default:
			return a
		}
		if strings.Contains(s, "@") {
			a.Value = slog.StringValue(redact.Text(s))
		}
	}
	return a
}
