package app

import (
	"strings"

	"github.com/connpipe/connpipe/services/admin/internal/alerts"
	"github.com/connpipe/connpipe/services/admin/internal/api"
	"github.com/prometheus/client_golang/prometheus"
)

// checkPrometheus checks PROMETHEUS_URL and PROMETHEUS_LINK_URL.
func (c Config) checkPrometheus() error {
	if strings.TrimSpace(c.PrometheusURL) != "" {
		if _, err := alerts.ParseURL("PROMETHEUS_URL", c.PrometheusURL); err != nil {
			return err
		}
	}
	if strings.TrimSpace(c.PrometheusLinkURL) != "" {
		if _, err := alerts.ParseURL("PROMETHEUS_LINK_URL", c.PrometheusLinkURL); err != nil {
			return err
		}
	}
	return nil
}

// prometheusAlerts is the page's source of firing alerts, nil without
// PROMETHEUS_URL (checked by Validate).
func prometheusAlerts(cfg Config, reg prometheus.Registerer) api.AlertSource {
	if strings.TrimSpace(cfg.PrometheusURL) == "" {
		return nil
	}
	base, err := alerts.ParseURL("PROMETHEUS_URL", cfg.PrometheusURL)
	if err != nil {
		return nil
	}
	link := ""
	if u, err := alerts.ParseURL("PROMETHEUS_LINK_URL", cfg.PrometheusLinkURL); err == nil && strings.TrimSpace(cfg.PrometheusLinkURL) != "" {
		link = u.Redacted()
	}
	return alerts.New(base, link, reg)
}
