package alert

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// FuzzParse: whatever a sender posts, the parsers return alerts or a *PayloadError (a 400
// with its reason), never panic, and never more alerts than MaxAlerts.
func FuzzParse(f *testing.F) {
	for _, file := range []string{"falcosidekick.json", "alertmanager.json"} {
		b, err := os.ReadFile("testdata/" + file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"x","pod":"p","namespace":"n"}}]}`))
	f.Add([]byte(`{"rule":"r","output_fields":{"k8s.pod.name":5,"x":null,"y":[1]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, parse := range []func([]byte) ([]Alert, error){
			func(b []byte) ([]Alert, error) { return ParseFalco(bytes.NewReader(b)) },
			func(b []byte) ([]Alert, error) { return ParseAlertmanager(bytes.NewReader(b)) },
		} {
			alerts, err := parse(body)
			var pe *PayloadError
			if err != nil && !errors.As(err, &pe) {
				t.Fatalf("error %v is not a PayloadError", err)
			}
			if len(alerts) > MaxAlerts {
				t.Fatalf("%d alerts", len(alerts))
			}
			for _, a := range alerts {
				if a.Rule == "" {
					t.Fatalf("an alert without a rule: %+v", a)
				}
			}
		}
	})
}
