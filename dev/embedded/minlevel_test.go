package embedded

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// countingHandler counts the attributes handed to it by WithAttrs.
type countingHandler struct {
	slog.Handler
	withs *int
}

func (h countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	*h.withs++
	return countingHandler{h.Handler.WithAttrs(attrs), h.withs}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(name), h.withs}
}

// TestMinLevelDefersAttributes: a logger derived with attributes costs
// the wrapped handler nothing until a record at the minimum level gets
// through, and that record carries every attribute and group.
func TestMinLevelDefersAttributes(t *testing.T) {
	var buf bytes.Buffer
	withs := 0
	inner := countingHandler{slog.NewTextHandler(&buf, nil), &withs}
	log := slog.New(minLevel{Handler: inner, min: slog.LevelWarn})
	for i := range 100 {
		l := log.With(slog.Int("conn", i)).WithGroup("cmd").With(slog.String("name", "find"))
		l.Info("dropped")
	}
	if withs != 0 {
		t.Fatalf("the wrapped handler got attributes %d times for records that were all dropped", withs)
	}
	log.With(slog.String("component", "ferretdb")).WithGroup("cmd").With(slog.String("name", "insert")).Warn("kept")
	out := buf.String()
	if strings.Contains(out, "dropped") || !strings.Contains(out, "component=ferretdb") || !strings.Contains(out, "cmd.name=insert") || !strings.Contains(out, "kept") {
		t.Fatalf("logged %q", out)
	}
	if !log.Handler().Enabled(context.Background(), slog.LevelError) || log.Handler().Enabled(context.Background(), slog.LevelInfo) {
		t.Fatal("levels: want Warn and above only")
	}
}
