package app_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rcm-platform/rcm/services/campaign/internal/app"
)

func TestContactMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := app.NewContactMetrics(reg)
	// Every series exists at 0 before any decision: 3 channels, allowed
	// once each and blocked by each of the 8 reasons.
	if n := testutil.CollectAndCount(reg, "rcm_contact_decisions_total"); n != 3*(1+8) {
		t.Fatalf("%d series before any decision, want 27", n)
	}
	for _, d := range [][3]string{
		{"call", "allowed", ""}, {"call", "allowed", "none"},
		{"sms", "blocked", "opted_out"}, {"sms", "blocked", "opted_out"}, {"sms", "blocked", "opted_out"},
		{"call", "blocked", "call_frequency_limit"},
	} {
		if err := m.Observe(d[0], d[1], d[2]); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range [][3]string{
		{"fax", "allowed", ""}, {"sms", "maybe", "none"}, {"sms", "blocked", "none"},
		{"sms", "blocked", "bad_weather"}, {"sms", "allowed", "opted_out"}, {"all", "blocked", "opted_out"},
	} {
		if err := m.Observe(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("Observe%v: counted, want an error", bad)
		}
	}
	if n := testutil.CollectAndCount(reg, "rcm_contact_decisions_total"); n != 27 {
		t.Fatalf("%d series after the decisions, want still 27", n)
	}
	moved := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				moved[strings.Join(labels, ",")] = v
			}
		}
	}
	want := map[string]float64{
		"channel=call,decision=allowed,reason=none":                 2,
		"channel=call,decision=blocked,reason=call_frequency_limit": 1,
		"channel=sms,decision=blocked,reason=opted_out":             3,
	}
	if !maps.Equal(moved, want) {
		t.Fatalf("counted %v, want %v", moved, want)
	}
}
