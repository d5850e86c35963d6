package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Tuner is a service's configuration that gives some variables of the
// blocks it embeds its own default or meaning: the variable stays
// declared once, in its block, and Tune names it with what differs (a
// Default or Desc left empty keeps the block's).
type Tuner interface {
	Tune() []Var
}

// tuning is spec's Tune by variable name, nil when spec has none.
func tuning(spec any) map[string]Var {
	t, ok := spec.(Tuner)
	if !ok {
		v := reflect.ValueOf(spec)
		if v.Kind() == reflect.Pointer && !v.IsNil() {
			t, ok = v.Elem().Interface().(Tuner)
		}
	}
	if !ok {
		return nil
	}
	out := map[string]Var{}
	for _, v := range t.Tune() {
		out[v.Name] = v
	}
	return out
}

// field finds the field of v (a struct, embedded blocks included) whose
// envconfig tag is name.
func field(v reflect.Value, name string) (reflect.Value, reflect.StructField, bool) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			if fv, sf, ok := field(v.Field(i), name); ok {
				return fv, sf, true
			}
			continue
		}
		if f.Tag.Get("envconfig") == name {
			return v.Field(i), f, true
		}
	}
	return reflect.Value{}, reflect.StructField{}, false
}

// applyTune sets each variable spec's Tune gives a default to that
// default, where unset(name) says the environment left it unset. A tuned
// name spec does not declare is an error (a misspelt Tune).
func applyTune(spec any, unset func(name string) bool) error {
	tune := tuning(spec)
	v := reflect.ValueOf(spec).Elem()
	for name, tv := range tune {
		fv, _, ok := field(v, name)
		if !ok {
			return fmt.Errorf("tuned variable %s is declared by no field", name)
		}
		if tv.Default == "" || !unset(name) {
			continue
		}
		if err := setString(fv, tv.Default); err != nil {
			return fmt.Errorf("default of %s: %w", name, err)
		}
	}
	return nil
}

// setString parses s into fv as envconfig would.
func setString(fv reflect.Value, s string) error {
	var err error
	switch t := fv.Type(); {
	case t == reflect.TypeOf(time.Duration(0)):
		var d time.Duration
		d, err = time.ParseDuration(s)
		fv.SetInt(int64(d))
	case t.Kind() == reflect.String:
		fv.SetString(s)
	case t.Kind() == reflect.Bool:
		var b bool
		b, err = strconv.ParseBool(s)
		fv.SetBool(b)
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		var n int64
		n, err = strconv.ParseInt(s, 0, 64)
		fv.SetInt(n)
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		var n uint64
		n, err = strconv.ParseUint(s, 0, 64)
		fv.SetUint(n)
	case t.Kind() == reflect.Float64:
		var x float64
		x, err = strconv.ParseFloat(s, 64)
		fv.SetFloat(x)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		fv.Set(reflect.ValueOf(strings.Split(s, ",")))
	default:
		err = fmt.Errorf("type %s", t)
	}
	return err
}
