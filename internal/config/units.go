package config

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// ByteSize is a size in bytes written as "4G", "512M", "1024K" or a plain
// byte count. Suffixes are binary (G = GiB).
type ByteSize int64

// ParseSize parses a human size such as "4G" or "512MiB".
func ParseSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size; use a number with a unit such as 4G or 512M")
	}
	upper := strings.ToUpper(t)
	upper = strings.TrimSuffix(upper, "IB")
	upper = strings.TrimSuffix(upper, "B")
	mult := int64(1)
	if n := len(upper); n > 0 {
		switch upper[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			upper = upper[:n-1]
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(upper), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q; use a whole number with a unit such as 4G or 512M", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalText lets TOML strings decode into sizes.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalText writes the size the way a person would, and exactly: as
// FormatBytes does when that is exact, else as a whole number of the largest
// unit that divides it ("1536M"), else as the byte count.
func (b ByteSize) MarshalText() ([]byte, error) {
	n := int64(b)
	for _, u := range byteUnits {
		if n != 0 && n%u.size == 0 {
			return []byte(strconv.FormatInt(n/u.size, 10) + u.suffix), nil
		}
	}
	return []byte(strconv.FormatInt(n, 10)), nil
}

// String is FormatBytes.
func (b ByteSize) String() string { return FormatBytes(int64(b)) }

// byteUnits are the binary units sizes are written in, largest first.
var byteUnits = []struct {
	suffix string
	size   int64
}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}}

// FormatBytes is banger's one way to show a byte count to people, in the
// units ParseSize reads: the largest unit the count reaches, as a whole
// number when it is one ("4G", "64M", "100B"), else rounded to one decimal
// ("1.5G").
func FormatBytes(n int64) string {
	if n < 0 && n != math.MinInt64 {
		return "-" + FormatBytes(-n)
	}
	for _, u := range byteUnits {
		switch {
		case n < u.size:
			continue
		case n%u.size == 0:
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		default:
			return strconv.FormatFloat(float64(n)/float64(u.size), 'f', 1, 64) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// Duration is a time.Duration written as "10s" or "2m" in TOML.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("invalid duration %q; use a value such as \"10s\" or \"2m\"", string(text))
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration in Go syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// fieldKeys maps "VM.VCPUs" style Go field paths to TOML keys ("vm.vcpus"),
// derived from the struct tags so error messages use the user's words.
func fieldKeys() map[string]string {
	out := map[string]string{}
	var walk func(t reflect.Type, goPrefix, tomlPrefix string)
	walk = func(t reflect.Type, goPrefix, tomlPrefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			key := strings.Split(f.Tag.Get("toml"), ",")[0]
			goName, tomlName := goPrefix+f.Name, tomlPrefix+key
			out[goName] = tomlName
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, goName+".", tomlName+".")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "", "")
	return out
}
