package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// horovodrunKeys maps the sections of horovodrun's --config-file to gorun's
// flags ("section.key" -> flag; "section.*" for a whole section). "!"
// marks horovodrun settings gorun does not have (an error naming the key),
// "" settings accepted and ignored. stall_check.enabled is the negation of
// --no-stall-check.
var horovodrunKeys = map[string]string{
	"params.fusion_threshold_mb":        "fusion-threshold-mb",
	"params.cycle_time_ms":              "cycle-time-ms",
	"params.cache_capacity":             "cache-capacity",
	"params.hierarchical_allreduce":     "hierarchical-allreduce",
	"timeline.filename":                 "timeline-filename",
	"timeline.mark_cycles":              "timeline-mark-cycles",
	"stall_check.warning_time_seconds":  "stall-check-warning-time-seconds",
	"stall_check.shutdown_time_seconds": "stall-check-shutdown-time-seconds",
	"logging.level":                     "log-level",
	"logging.hide_timestamp":            "", // accepted; gorun's lines carry no time unless asked
	"stall_check.enabled":               "no-stall-check",
	"params.hierarchical_allgather":     "!",
	"autotune.*":                        "!",
	"library_options.*":                 "!",
	"elastic.*":                         "!",
	"controller":                        "!",
	"cpu_operations":                    "!",
	"gpu_operations":                    "!",
	// Top-level keys are gorun's flag names ("fusion_threshold_mb" or
	// "fusion-threshold-mb"); these read differently.
	"verbose": "verbose",
	"np":      "num-proc",
}

// notFromFile are flags a config file cannot set.
var notFromFile = map[string]bool{"config-file": true, "check": true, "check-build": true, "help": true, "version": true}

// flagAliases: one setting, two spellings.
var flagAliases = map[string]string{"network-interfaces": "network-interface", "check-build": "check", "n": "num-proc"}

// applyConfigFile reads a YAML (or JSON) file of settings and sets every
// flag the command line did not set. Keys are gorun's flag names (with -
// or _), or horovodrun's sections (params, timeline, stall_check,
// logging); horovodrun settings gorun does not have are errors naming the
// key.
func applyConfigFile(path string, fs *pflag.FlagSet) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return usagef("--config-file: %v", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return usagef("--config-file %s: not YAML or JSON: %v", path, err)
	}
	settings, err := configSettings(doc, fs)
	if err != nil {
		return usagef("--config-file %s: %v", path, err)
	}
	fromCLI := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { fromCLI[canonicalFlag(f.Name)] = true })
	names := make([]string, 0, len(settings))
	for n := range settings {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if fromCLI[canonicalFlag(n)] {
			continue // the command line wins
		}
		s := settings[n]
		for _, v := range s.values {
			if err := fs.Set(n, v); err != nil {
				return usagef("--config-file %s: %s: %v", path, s.key, err)
			}
		}
	}
	return nil
}

func canonicalFlag(name string) string {
	if c, ok := flagAliases[name]; ok {
		return c
	}
	return name
}

type setting struct {
	key    string   // as written in the file, for messages
	values []string // one per Set (repeatable flags take several)
}

// configSettings flattens the document into flag settings.
func configSettings(doc map[string]any, fs *pflag.FlagSet) (map[string]setting, error) {
	out := map[string]setting{}
	var walk func(prefix string, m map[string]any) error
	walk = func(prefix string, m map[string]any) error {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			key := prefix + k
			v := m[k]
			flag, known := horovodrunKeys[key]
			if !known {
				flag, known = horovodrunKeys[prefix+"*"]
			}
			if sub, ok := v.(map[string]any); ok && key == "env" {
				out["env"] = setting{key: key, values: envMapping(sub)}
				continue
			}
			if sub, ok := v.(map[string]any); ok && !known {
				if err := walk(key+".", sub); err != nil {
					return err
				}
				continue
			}
			switch {
			case flag == "!":
				return fmt.Errorf("%s: a horovodrun setting gorun does not have", key)
			case known && flag == "":
				continue
			case !known && prefix == "":
				flag = strings.ReplaceAll(k, "_", "-")
			case !known:
				return fmt.Errorf("%s: unknown setting", key)
			}
			f := fs.Lookup(flag)
			if f == nil || notFromFile[flag] {
				return fmt.Errorf("%s: not a gorun setting (keys are gorun's flag names, or horovodrun's params, timeline, stall_check and logging sections)", key)
			}
			vals, err := flagValues(key, flag, v)
			if err != nil {
				return err
			}
			if prev, dup := out[canonicalFlag(flag)]; dup {
				return fmt.Errorf("%s and %s are the same setting", prev.key, key)
			}
			out[canonicalFlag(flag)] = setting{key: key, values: vals}
		}
		return nil
	}
	if err := walk("", doc); err != nil {
		return nil, err
	}
	return out, nil
}

// envMapping reads env given as a mapping, {NAME: value}, as -x NAME=value.
func envMapping(m map[string]any) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	vals := make([]string, len(names))
	for i, n := range names {
		vals[i] = n + "=" + fmt.Sprint(m[n])
	}
	return vals
}

// flagValues turns a YAML value into the strings pflag's Set takes.
func flagValues(key, flag string, v any) ([]string, error) {
	switch flag {
	case "no-stall-check": // from stall_check.enabled: the opposite
		on, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%s: want true or false, got %v", key, v)
		}
		return []string{strconv.FormatBool(!on)}, nil
	case "verbose": // horovodrun's verbose is a level number
		switch x := v.(type) {
		case int:
			return []string{strconv.FormatBool(x > 0)}, nil
		}
	case "log-level": // horovod's level names
		if s, ok := v.(string); ok {
			s = strings.ToLower(s)
			switch s {
			case "trace":
				s = "debug"
			case "warning":
				s = "warn"
			case "fatal":
				s = "error"
			}
			return []string{s}, nil
		}
	}
	switch x := v.(type) {
	case nil:
		return nil, fmt.Errorf("%s: no value", key)
	case []any:
		vals := make([]string, 0, len(x))
		for _, e := range x {
			vals = append(vals, fmt.Sprint(e))
		}
		if flag == "env" {
			return vals, nil
		}
		return []string{strings.Join(vals, ",")}, nil
	case map[string]any:
		return nil, fmt.Errorf("%s: want a value, not a section", key)
	}
	return []string{fmt.Sprint(v)}, nil
}
