package worker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/errkind"
)

func envMap(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestDetectLaunch(t *testing.T) {
	tests := []struct {
		name    string
		env     func(string) string
		source  string
		rank    int
		size    int
		rdv     string
		serve   bool
		derived bool
		wantErr string
	}{
		{name: "single", env: envMap(), source: "single", rank: 0, size: 1},
		{name: "gorun", env: envMap("GOROVOD_RANK", "2", "GOROVOD_SIZE", "4", "GOROVOD_LOCAL_RANK", "0",
			"GOROVOD_RENDEZVOUS_ADDR", "10.0.0.1:5000", "GOROVOD_SECRET", "abcd"), source: "gorun", rank: 2, size: 4, rdv: "10.0.0.1:5000"},
		{name: "openmpi one host", env: envMap("OMPI_COMM_WORLD_RANK", "0", "OMPI_COMM_WORLD_SIZE", "3",
			"OMPI_COMM_WORLD_LOCAL_RANK", "0", "OMPI_COMM_WORLD_LOCAL_SIZE", "3", "OMPI_MCA_ess_base_jobid", "12345"),
			source: "openmpi", rank: 0, size: 3, serve: true, derived: true, rdv: "127.0.0.1:"},
		{name: "openmpi with master addr", env: envMap("OMPI_COMM_WORLD_RANK", "1", "OMPI_COMM_WORLD_SIZE", "3",
			"MASTER_ADDR", "198.18.0.1", "MASTER_PORT", "29500", "GOROVOD_SECRET", "00ff"),
			source: "openmpi", rank: 1, size: 3, rdv: "198.18.0.1:29500"},
		{name: "slurm", env: envMap("SLURM_PROCID", "3", "SLURM_NTASKS", "4", "SLURM_LOCALID", "1",
			"SLURM_JOB_ID", "77", "SLURM_JOB_NODELIST", "node[07-09],gpu1", "SLURM_NNODES", "2"),
			source: "slurm", rank: 3, size: 4, rdv: "node07:", derived: true},
		{name: "torchrun", env: envMap("RANK", "0", "WORLD_SIZE", "2", "LOCAL_RANK", "0",
			"MASTER_ADDR", "127.0.0.1", "MASTER_PORT", "29400", "GOROVOD_SECRET", "01"),
			source: "env", rank: 0, size: 2, serve: true, rdv: "127.0.0.1:29400"},
		{name: "torchrun one host", env: envMap("RANK", "1", "WORLD_SIZE", "2", "LOCAL_RANK", "1", "LOCAL_WORLD_SIZE", "2",
			"TORCHELASTIC_RUN_ID", "run7"), source: "env", rank: 1, size: 2, derived: true, rdv: "127.0.0.1:"},
		{name: "mpich", env: envMap("PMI_RANK", "2", "PMI_SIZE", "3", "MPI_LOCALRANKID", "2", "MPI_LOCALNRANKS", "3",
			"PMI_KVSNAME", "kvs_42_0"), source: "mpich", rank: 2, size: 3, derived: true, rdv: "127.0.0.1:"},
		{name: "intel mpi with master addr", env: envMap("PMI_RANK", "0", "PMI_SIZE", "4", "MASTER_ADDR", "198.18.0.2",
			"MASTER_PORT", "29501", "GOROVOD_SECRET", "0a"), source: "mpich", rank: 0, size: 4, serve: true, rdv: "198.18.0.2:29501"},
		{name: "torchrun without master", env: envMap("RANK", "0", "WORLD_SIZE", "2"), wantErr: "MASTER_ADDR"},
		{name: "half master", env: envMap("RANK", "0", "WORLD_SIZE", "2", "MASTER_ADDR", "h"), wantErr: "MASTER_PORT"},
		{name: "bad port", env: envMap("RANK", "0", "WORLD_SIZE", "2", "MASTER_ADDR", "h", "MASTER_PORT", "x"), wantErr: "MASTER_PORT"},
		{name: "rank out of range", env: envMap("GOROVOD_RANK", "4", "GOROVOD_SIZE", "4", "GOROVOD_RENDEZVOUS_ADDR", "a:1", "GOROVOD_SECRET", "ab"), wantErr: "rank 4, size 4"},
		{name: "bad rank", env: envMap("GOROVOD_RANK", "x", "GOROVOD_SIZE", "4", "GOROVOD_RENDEZVOUS_ADDR", "a:1"), wantErr: "GOROVOD_RANK"},
		{name: "bad secret", env: envMap("GOROVOD_RANK", "0", "GOROVOD_SIZE", "1", "GOROVOD_RENDEZVOUS_ADDR", "a:1", "GOROVOD_SECRET", "zz"), wantErr: "GOROVOD_SECRET"},
		{name: "bad timeout", env: envMap("GOROVOD_START_TIMEOUT", "soon"), wantErr: "GOROVOD_START_TIMEOUT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			li, err := Detect(tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errkind.Invalid) {
					t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if li.Source != tc.source || li.Rank != tc.rank || li.Size != tc.size || li.ServeRendezvous != tc.serve || li.SecretDerived != tc.derived {
				t.Fatalf("got %+v", li)
			}
			if !strings.HasPrefix(li.RendezvousAddr, tc.rdv) {
				t.Fatalf("rendezvous %q, want prefix %q", li.RendezvousAddr, tc.rdv)
			}
			if tc.source != "single" && len(li.Secret) == 0 {
				t.Fatal("no secret")
			}
		})
	}
}

func TestDerivedRendezvousIsTheSameOnEveryRank(t *testing.T) {
	a, err := Detect(envMap("OMPI_COMM_WORLD_RANK", "0", "OMPI_COMM_WORLD_SIZE", "2", "OMPI_COMM_WORLD_LOCAL_SIZE", "2", "OMPI_MCA_ess_base_jobid", "9"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Detect(envMap("OMPI_COMM_WORLD_RANK", "1", "OMPI_COMM_WORLD_SIZE", "2", "OMPI_COMM_WORLD_LOCAL_SIZE", "2", "OMPI_MCA_ess_base_jobid", "9"))
	if err != nil {
		t.Fatal(err)
	}
	if a.RendezvousAddr != b.RendezvousAddr || string(a.Secret) != string(b.Secret) {
		t.Fatalf("ranks disagree: %q vs %q", a.RendezvousAddr, b.RendezvousAddr)
	}
	if !a.ServeRendezvous || b.ServeRendezvous {
		t.Fatal("rank 0 must serve rendezvous, rank 1 must not")
	}
}

func TestStartTimeoutFromEnv(t *testing.T) {
	for v, want := range map[string]time.Duration{"3s": 3 * time.Second, "2.5": 2500 * time.Millisecond} {
		li, err := Detect(envMap("GOROVOD_START_TIMEOUT", v))
		if err != nil || li.StartTimeout != want {
			t.Fatalf("%s: got %v, %v", v, li.StartTimeout, err)
		}
	}
}

func TestFirstSlurmNode(t *testing.T) {
	for in, want := range map[string]string{
		"node1": "node1", "node[01-04]": "node01", "a[3,5-7]b,c": "a3b", "x,y": "x", "": "",
	} {
		got, err := firstSlurmNode(in)
		if err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := firstSlurmNode("node]1["); err == nil {
		t.Error("malformed list accepted")
	}
}
