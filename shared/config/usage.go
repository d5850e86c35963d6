package config

import (
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Var is one environment variable of a service's configuration, as its
// struct tags declare it: the one source of its name, default and meaning
// for the code, -h and the README check.
type Var struct {
	Name    string // envconfig tag
	Default string // default tag, "" when none
	Desc    string // desc tag
}

// Vars lists the variables of spec (a struct, or a pointer to one), in
// field order, embedded blocks included, with the defaults and meanings
// spec's Tune gives.
func Vars(spec any) []Var {
	vars := declared(spec)
	tune := tuning(spec)
	for i, v := range vars {
		if tv, ok := tune[v.Name]; ok {
			if tv.Default != "" {
				vars[i].Default = tv.Default
			}
			if tv.Desc != "" {
				vars[i].Desc = tv.Desc
			}
		}
	}
	return vars
}

// declared lists the variables as the tags of spec declare them.
func declared(spec any) []Var {
	t := reflect.TypeOf(spec)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []Var
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			out = append(out, declared(reflect.New(f.Type).Interface())...)
			continue
		}
		name := f.Tag.Get("envconfig")
		if name == "" || name == "-" || f.Tag.Get("ignored") == "true" {
			continue
		}
		out = append(out, Var{Name: name, Default: f.Tag.Get("default"), Desc: f.Tag.Get("desc")})
	}
	return out
}

// WriteUsage prints the variables of spec as a table for -h: name,
// default, meaning, the meaning wrapped to the terminal's usual width.
func WriteUsage(w io.Writer, spec any) {
	vars := Vars(spec)
	width := 0
	for _, v := range vars {
		width = max(width, len(v.Name))
	}
	const line = 80
	indent := 2 + width + 2
	for _, v := range vars {
		def := v.Default
		if def == "" {
			def = `""`
		}
		text := "default " + def
		if v.Desc != "" {
			text += ". " + v.Desc
		}
		fmt.Fprintf(w, "  %-*s  %s\n", width, v.Name, wrap(text, line-indent, indent))
	}
}

// wrap breaks s into lines of at most n characters, each after the first
// indented by indent spaces.
func wrap(s string, n, indent int) string {
	if n < 20 {
		n = 20
	}
	var b strings.Builder
	col := 0
	for i, word := range strings.Fields(s) {
		if i > 0 && col+1+len(word) > n {
			b.WriteString("\n" + strings.Repeat(" ", indent))
			col = 0
		} else if i > 0 {
			b.WriteByte(' ')
			col++
		}
		b.WriteString(word)
		col += len(word)
	}
	return b.String()
}

// Defaults fills spec (a pointer to a struct) with the values of its
// default tags and Tune, as an empty environment would: a test's starting
// point with no second copy of the defaults to drift from the tags.
func Defaults(spec any) error {
	if err := tagDefaults(reflect.ValueOf(spec).Elem()); err != nil {
		return err
	}
	return applyTune(spec, func(string) bool { return true })
}

// tagDefaults sets every field of v (embedded blocks included) that has a
// default tag to it.
func tagDefaults(v reflect.Value) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			if err := tagDefaults(v.Field(i)); err != nil {
				return err
			}
			continue
		}
		def, ok := f.Tag.Lookup("default")
		if !ok || f.Tag.Get("envconfig") == "" {
			continue
		}
		if err := setString(v.Field(i), def); err != nil {
			return fmt.Errorf("default of %s: %w", f.Tag.Get("envconfig"), err)
		}
	}
	return nil
}
