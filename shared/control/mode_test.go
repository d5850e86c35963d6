package control

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestModesAndKeysAsJSON: modes and hash keys travel as their names; an
// empty one means "not given"; an unknown one is refused as a bad mode
// naming the table's rows, not as a malformed message.
func TestModesAndKeysAsJSON(t *testing.T) {
	for _, m := range Modes() {
		for _, k := range HashKeys() {
			body := `{"op":"set_mode","mode":"` + m.Mode.String() + `","hash_key":"` + k.Key.String() + `"}`
			msg, err := Parse([]byte(body))
			if err != nil || msg.Mode != m.Mode || msg.HashKey != k.Key {
				t.Fatalf("%s: %v %+v", body, err, msg)
			}
			out, _ := json.Marshal(msg)
			if string(out) != body {
				t.Errorf("re-encoded %s, was %s", out, body)
			}
		}
	}
	if msg, err := Parse([]byte(`{"op":"set_mode","mode":"","sticky":true}`)); err != nil || msg.Mode != "" {
		t.Fatalf("empty mode: %v %+v", err, msg)
	}
	for body, want := range map[string]string{
		`{"op":"set_mode","mode":"random"}`:   `mode "random" (want weighted or hash)`,
		`{"op":"set_mode","hash_key":"port"}`: `hash_key "port" (want src, dst, pair or flow)`,
	} {
		_, err := Parse([]byte(body))
		if !errors.Is(err, ErrBadMode) || errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a bad mode with %q", body, err, want)
		}
	}
	var tb Table
	if tb.RoutingMode() != Modes()[0].Mode || tb.Key() != HashKeys()[0].Key {
		t.Fatalf("a table without mode or key: %s %s", tb.RoutingMode(), tb.Key())
	}
}
