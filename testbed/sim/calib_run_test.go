package sim

import (
	"context"
	"os"
	"testing"
)

func TestCalibPrint(t *testing.T) {
	if os.Getenv("SIM_CALIB") == "" {
		t.Skip()
	}
	cs, err := Calibrate(context.Background(), Config{}.Calibrated(), RealRows, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		t.Logf("%-50s real %.3f sim %.3f diff %+.3f | max real %.2f sim %.3f", c.Row.Name, c.Row.P50, c.SimP50, c.Diff, c.Row.Max, c.SimMax)
	}
}
