// Package envconfig loads a command's configuration from LS_ environment
// variables (github.com/caarlos0/env) and prints it for --help.
//
// A configuration is a flat struct whose fields carry `env`, `envDefault`
// and `help` tags:
//
//	HTTPAddr string `env:"HTTP_ADDR" envDefault:":8080" help:"HTTP listen address"`
//
// Number and duration fields may also carry `min` and `max` tags, in the
// field's own syntax; a value outside them is an error naming the
// variable:
//
//	Capacity int           `env:"CAPACITY" envDefault:"500" min:"1"`
//	Hold     time.Duration `env:"HOLD" envDefault:"40ms" min:"0s"`
package envconfig

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/caarlos0/env/v10"
)

// Prefix starts every variable's name.
const Prefix = "LS_"

// ErrHelp is returned by Load when the arguments ask for help; the usage
// has been written.
var ErrHelp = errors.New("help requested")

// Load fills cfg (a pointer to a struct) from the environment. When args
// contain -h, -help or --help it writes the usage of command to w instead
// and returns ErrHelp.
func Load(cfg any, command string, args []string, w io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			Usage(w, command, cfg)
			return ErrHelp
		}
	}
	err := env.ParseWithOptions(cfg, env.Options{Prefix: Prefix})
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		return checkBounds(cfg)
	}
	// Name the variable, not the Go field, in what the operator reads.
	t := structType(cfg)
	var errs []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				e = fmt.Errorf("%s%s: %w", Prefix, f.Tag.Get("env"), pe.Err)
			}
		}
		errs = append(errs, e)
	}
	return fmt.Errorf("config: %w", errors.Join(errs...))
}

func structType(cfg any) reflect.Type {
	t := reflect.TypeOf(cfg)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// Usage writes every variable of cfg with its default and meaning.
func Usage(w io.Writer, command string, cfg any) {
	fmt.Fprintf(w, "Usage: %s\n\nConfiguration is read from these environment variables:\n\n", command)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	t := structType(cfg)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, ok := f.Tag.Lookup("env")
		if !ok || name == "-" {
			continue
		}
		def := f.Tag.Get("envDefault")
		if def == "" {
			def = "-"
		}
		help := f.Tag.Get("help")
		lo, hasLo := f.Tag.Lookup("min")
		hi, hasHi := f.Tag.Lookup("max")
		switch {
		case hasLo && hasHi:
			help += fmt.Sprintf(" (%s to %s)", lo, hi)
		case hasLo:
			help += fmt.Sprintf(" (at least %s)", lo)
		case hasHi:
			help += fmt.Sprintf(" (at most %s)", hi)
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\n", Prefix, name, def, help)
	}
	tw.Flush()
}

// checkBounds checks every field with a min or max tag against them.
func checkBounds(cfg any) error {
	v := reflect.ValueOf(cfg)
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	t := v.Type()
	var errs []error
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		for _, bound := range []string{"min", "max"} {
			lim, ok := f.Tag.Lookup(bound)
			if !ok {
				continue
			}
			if err := checkBound(v.Field(i), bound, lim); err != nil {
				errs = append(errs, fmt.Errorf("%s%s: %w", Prefix, f.Tag.Get("env"), err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("config: %w", errors.Join(errs...))
	}
	return nil
}

var durationType = reflect.TypeFor[time.Duration]()

// checkBound compares a field's value with its bound lim ("min" or
// "max"), written in the field's syntax. A bound that does not parse, or
// one on a field that is not a number, is the program's mistake and
// panics.
func checkBound(v reflect.Value, bound, lim string) error {
	c, shown, err := compare(v, lim)
	if err != nil {
		panic(fmt.Sprintf("envconfig: %s tag %q: %v", bound, lim, err))
	}
	switch {
	case bound == "min" && c < 0:
		return fmt.Errorf("%s is less than %s", shown, lim)
	case bound == "max" && c > 0:
		return fmt.Errorf("%s is more than %s", shown, lim)
	}
	return nil
}

// compare compares a number or duration field with lim, and returns the
// field's value as written.
func compare(v reflect.Value, lim string) (int, string, error) {
	switch {
	case v.Type() == durationType:
		l, err := time.ParseDuration(lim)
		d := time.Duration(v.Int())
		return cmp.Compare(d, l), d.String(), err
	case v.CanInt():
		l, err := strconv.ParseInt(lim, 10, 64)
		return cmp.Compare(v.Int(), l), strconv.FormatInt(v.Int(), 10), err
	case v.CanUint():
		l, err := strconv.ParseUint(lim, 10, 64)
		return cmp.Compare(v.Uint(), l), strconv.FormatUint(v.Uint(), 10), err
	}
	return 0, "", fmt.Errorf("a %s field has no bounds", v.Type())
}
