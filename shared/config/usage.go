package config

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
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
// field order, nested structs included.
func Vars(spec any) []Var {
	t := reflect.TypeOf(spec)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []Var
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			out = append(out, Vars(reflect.New(f.Type).Interface())...)
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
// default tags, as an empty environment would: a test's starting point with
// no second copy of the defaults to drift from the tags.
func Defaults(spec any) error {
	v := reflect.ValueOf(spec).Elem()
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		def, ok := f.Tag.Lookup("default")
		if !ok || f.Tag.Get("envconfig") == "" {
			continue
		}
		fv := v.Field(i)
		var err error
		switch {
		case f.Type == reflect.TypeOf(time.Duration(0)):
			var d time.Duration
			d, err = time.ParseDuration(def)
			fv.SetInt(int64(d))
		case f.Type.Kind() == reflect.String:
			fv.SetString(def)
		case f.Type.Kind() == reflect.Bool:
			var b bool
			b, err = strconv.ParseBool(def)
			fv.SetBool(b)
		case f.Type.Kind() >= reflect.Int && f.Type.Kind() <= reflect.Int64:
			var n int64
			n, err = strconv.ParseInt(def, 0, 64)
			fv.SetInt(n)
		case f.Type.Kind() == reflect.Float64:
			var x float64
			x, err = strconv.ParseFloat(def, 64)
			fv.SetFloat(x)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
			fv.Set(reflect.ValueOf(strings.Split(def, ",")))
		default:
			err = fmt.Errorf("type %s", f.Type)
		}
		if err != nil {
			return fmt.Errorf("default of %s: %w", f.Tag.Get("envconfig"), err)
		}
	}
	return nil
}
