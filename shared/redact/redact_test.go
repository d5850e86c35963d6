package redact

import "testing"

func TestAddrAndText(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:6379":             "127.0.0.1:6379",
		"redis://u:secret@h:6379/1":  "redis://u:xxxxx@h:6379/1",
		"rediss://:secret@h:6380":    "rediss://:xxxxx@h:6380",
		"redis://u@h:6379":           "redis://u@h:6379",
		"u:secret@h:6379":            "xxxxx@h:6379",
		"redis://u:sec%zzret@h:6379": "redis://xxxxx@h:6379",
		"redis://u:se@cret@h:6379/0": "redis://u:xxxxx@h:6379/0",
	} {
		if got := Addr(in); got != want {
			t.Errorf("Addr(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"no address here":                                  "no address here",
		"redis://u:secret@h:6379/0: mget: refused":         "redis://u:xxxxx@h:6379/0: mget: refused",
		`x "rediss://:secret@h:1" and amqp://g:pw@b:5672/`: `x "rediss://:xxxxx@h:1" and amqp://g:xxxxx@b:5672/`,
		"mail me@example.org at http://h/x":                "mail me@example.org at http://h/x",
		"redis://u@h:1 user only":                          "redis://u@h:1 user only",
	} {
		if got := Text(in); got != want {
			t.Errorf("Text(%q) = %q, want %q", in, got, want)
		}
	}
}
