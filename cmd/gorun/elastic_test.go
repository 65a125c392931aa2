package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/gorovod/gorovod/elastic"
)

func parseElastic(t *testing.T, args ...string) (elastic.DriverConfig, error) {
	t.Helper()
	var o options
	var e elasticOptions
	fs := pflag.NewFlagSet("gorun", pflag.ContinueOnError)
	o.register(fs)
	e.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parsing %v: %v", args, err)
	}
	if !e.enabled(fs) {
		t.Fatalf("%v does not enable elastic mode", args)
	}
	cfg, _, err := elasticConfig(&o, &e, fs)
	return cfg, err
}

func TestElasticFlags(t *testing.T) {
	cfg, err := parseElastic(t, "--min-np", "2", "-H", "localhost:4", "--blacklist-cooldown-range", "1s,4s", "--heartbeat", "200ms", "--reset-limit", "3")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinNP != 2 || cfg.MaxNP != 4 || cfg.Policy.CooldownMin != time.Second || cfg.Policy.CooldownMax != 4*time.Second ||
		cfg.Heartbeat != 200*time.Millisecond || cfg.ResetLimit != 3 || cfg.ElasticTimeout != 10*time.Minute {
		t.Fatalf("config %+v", cfg)
	}
	if _, ok := cfg.Discovery.(*elastic.Static); !ok {
		t.Fatalf("-H gives discovery %T", cfg.Discovery)
	}
	cfg, err = parseElastic(t, "--max-np", "3", "--blacklist-cooldown-range", "0")
	if err != nil || cfg.MinNP != 1 || cfg.MaxNP != 3 || cfg.Policy.CooldownMin != 0 {
		t.Fatalf("defaults: %+v, %v", cfg, err)
	}
	if cfg, err = parseElastic(t, "--host-discovery-script", "./d.sh", "--min-np", "2"); err != nil {
		t.Fatal(err)
	} else if s, ok := cfg.Discovery.(*elastic.Script); !ok || s.Interval != time.Second || s.DefaultSlots != 1 {
		t.Fatalf("script discovery: %#v", cfg.Discovery)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--min-np", "3", "--max-np", "2"}, "below --min-np"},
		{[]string{"--min-np", "2", "--blacklist-cooldown-range", "5s"}, "--blacklist-cooldown-range"},
		{[]string{"--consul", "127.0.0.1:8500"}, "--consul needs --consul-service"},
		{[]string{"--min-np", "2", "-H", "a:2", "--host-discovery-script", "x"}, "one host source"},
		{[]string{"--min-np", "2", "--slots-per-host", "0"}, "--slots-per-host"},
		{[]string{"--min-np", "2", "--reset-limit", "-1"}, "--reset-limit"},
		{[]string{"--min-np", "2", "--heartbeat", "0"}, "--heartbeat"},
	} {
		_, err := parseElastic(t, tc.args...)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want a usage error about %q", tc.args, err, tc.want)
		}
	}
}
