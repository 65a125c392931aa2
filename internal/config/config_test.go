package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestFromEnv(t *testing.T) {
	env := map[string]string{
		EnvFusionThreshold: "1048576", EnvCycleTime: "5", EnvCacheCapacity: "0",
		EnvStallCheckTime: "2", EnvStallShutdownTime: "4s", EnvDisableShm: "1", EnvTimeline: "/tmp/t.json",
		EnvTimelineMarkCycles: "true",
	}
	c, err := Default().FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.FusionThresholdBytes != 1<<20 || c.CycleTime != 5*time.Millisecond || c.CacheCapacity != 0 ||
		c.StallWarningTime != 2*time.Second || c.StallShutdownTime != 4*time.Second || !c.DisableShm || c.TimelineFile != "/tmp/t.json" || !c.TimelineMarkCycles {
		t.Fatalf("got %+v", c)
	}
}

func TestDataPlaneChoicesFromEnv(t *testing.T) {
	env := map[string]string{EnvAlgorithm: "Single-Copy", EnvSmallBytes: "4096", EnvDisableSingleCopy: "true", EnvSingleCopyMax: "8388608"}
	c, err := Default().FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.AllreduceAlgorithm != "single-copy" || c.SmallBytes != 4096 || !c.DisableSingleCopy || c.SingleCopyMaxBytes != 8<<20 {
		t.Fatalf("got %+v", c)
	}
}

func TestInvalidValuesNameTheField(t *testing.T) {
	cases := map[string]map[string]string{
		EnvFusionThreshold:     {EnvFusionThreshold: "lots"},
		EnvCycleTime:           {EnvCycleTime: "fast"},
		EnvDisableShm:          {EnvDisableShm: "maybe"},
		"CycleTime":            {EnvCycleTime: "0"},
		"CacheCapacity":        {EnvCacheCapacity: "-1"},
		"StallShutdownTime":    {EnvStallCheckTime: "10", EnvStallShutdownTime: "5"},
		"SegmentBytes":         {EnvSegmentBytes: "12"},
		"FusionThresholdBytes": {EnvFusionThreshold: "-5"},
		"AllreduceAlgorithm":   {EnvAlgorithm: "butterfly"},
		"SmallBytes":           {EnvSmallBytes: "-1"},
		"SingleCopyMaxBytes":   {EnvSingleCopyMax: "-2"},
		EnvDisableSingleCopy:   {EnvDisableSingleCopy: "perhaps"},
	}
	for want, env := range cases {
		_, err := Default().FromEnv(func(k string) string { return env[k] })
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: err %v, want ErrInvalid naming %s", env, err, want)
		}
	}
}
