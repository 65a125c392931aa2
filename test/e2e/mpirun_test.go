package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMpirunWithoutGorun runs allreducecheck under OpenMPI's mpirun: the
// workers find their place in OMPI_COMM_WORLD_* and rank 0 serves
// rendezvous on a port derived from the OpenMPI job id.
func TestMpirunWithoutGorun(t *testing.T) {
	mpirun, err := exec.LookPath("mpirun")
	if err != nil {
		t.Skip("mpirun not installed (Debian: apt-get install openmpi-bin; scripts/deps.sh test does it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, mpirun, "-np", "3", "--oversubscribe", "--allow-run-as-root",
		filepath.Join(binDir, "allreducecheck"))
	// No GOROVOD_* from the test's environment: mpirun alone must do.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOROVOD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("mpirun did not finish within 2 minutes; output:\n%s", out)
	}
	if err != nil {
		t.Fatalf("mpirun: %v; output:\n%s", err, out)
	}
	// No secret given: one warning for the job (rank 0's), not one per rank.
	if n := strings.Count(string(out), "no job secret in the environment"); n != 1 {
		t.Errorf("the derived-secret warning appears %d times, want once; output:\n%s", n, out)
	}
	for rank := 0; rank < 3; rank++ {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^rank %d of 3: \d+ checks OK$`, rank))
		if !re.MatchString(string(out)) {
			t.Errorf("no success line for rank %d; output:\n%s", rank, out)
		}
	}
}
