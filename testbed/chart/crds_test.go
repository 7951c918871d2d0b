package chart

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor
// the chart uses; decoding strictly into it catches misspelt fields.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port      string `json:"port"`
			Path      string `json:"path"`
			Interval  string `json:"interval"`
			Scheme    string `json:"scheme"`
			TLSConfig *struct {
				CA         secretOrConfigMap  `json:"ca"`
				Cert       *secretOrConfigMap `json:"cert"`
				KeySecret  *secretKey         `json:"keySecret"`
				ServerName string             `json:"serverName"`
			} `json:"tlsConfig"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type secretOrConfigMap struct {
	Secret *secretKey `json:"secret"`
}

type secretKey struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// certificate is the part of cert-manager.io/v1 Certificate the chart uses.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName  string   `json:"secretName"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		CommonName  string   `json:"commonName"`
		DNSNames    []string `json:"dnsNames"`
		Usages      []string `json:"usages"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Group string `json:"group"`
		} `json:"issuerRef"`
	} `json:"spec"`
}
