package nomadtest

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Realistic payloads, shaped like Nomad 2.0's Allocation and Job events
// (trimmed, but with the same nesting, int64 nanosecond timestamps above
// 2^53 and a few KB per event), for tests and benchmarks.

const baseTime = int64(1757000000000000000) // ns; far above 2^53

func uuid(kind, i int) string {
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", uint32(i*2654435761), kind, 0x4000|i&0xfff, 0x8000|kind, uint64(i)*0x9e3779b97f4a)
}

// AllocationEvent returns an AllocationUpdated event for allocation i of job.
func AllocationEvent(i int, job, namespace string) Event {
	id := uuid(1, i)
	t := baseTime + int64(i)*1_000_003
	payload := fmt.Sprintf(`{"Allocation":{"ID":%q,"Namespace":%q,"EvalID":%q,"Name":"%s.web[%d]","NodeID":%q,"NodeName":"client-%d","JobID":%q,`+
		`"Job":null,"TaskGroup":"web","Resources":{"CPU":500,"Cores":0,"MemoryMB":256,"MemoryMaxMB":0,"DiskMB":300,"IOPS":0,"Networks":null,"Devices":null,"NUMA":null,"SecretsMB":0},`+
		`"AllocatedResources":{"Tasks":{"server":{"Cpu":{"CpuShares":500,"ReservedCores":null},"Memory":{"MemoryMB":256,"MemoryMaxMB":0},"Networks":null,"Devices":null}},`+
		`"TaskLifecycles":{"server":null},"Shared":{"Networks":[{"Mode":"bridge","Device":"","CIDR":"","IP":"10.0.%d.%d","Hostname":"","MBits":0,"DNS":null,"ReservedPorts":null,"DynamicPorts":[{"Label":"http","Value":%d,"To":8080,"HostNetwork":"default","IgnoreCollision":false}]}],"DiskMB":300,"Ports":[{"Label":"http","Value":%d,"To":8080,"HostIP":"10.0.%d.%d"}]}},`+
		`"Metrics":{"NodesEvaluated":3,"NodesFiltered":0,"NodesInPool":3,"NodesAvailable":{"dc1":3},"ClassFiltered":null,"ConstraintFiltered":null,"NodesExhausted":0,"ClassExhausted":null,"DimensionExhausted":null,"QuotaExhausted":null,"ResourcesExhausted":null,`+
		`"ScoreMetaData":[{"NodeID":%q,"Scores":{"binpack":0.4187071231924441,"job-anti-affinity":0,"node-affinity":0,"node-reschedule-penalty":0},"NormScore":0.4187071231924441}],"AllocationTime":%d,"CoalescedFailures":0},`+
		`"DesiredStatus":"run","DesiredDescription":"","DesiredTransition":{"Migrate":null,"Reschedule":null,"ForceReschedule":null,"NoShutdownDelay":null},"ClientStatus":"running","ClientDescription":"Tasks are running",`+
		`"TaskStates":{"server":{"State":"running","Failed":false,"Restarts":0,"LastRestart":null,"StartedAt":"2025-09-04T15:33:20.%09dZ","FinishedAt":null,`+
		`"Events":[{"Type":"Received","Time":%d,"Message":"","DisplayMessage":"Task received by client","Details":{},"FailsTask":false,"RestartReason":"","SetupError":"","DriverError":"","ExitCode":0,"Signal":0,"KillTimeout":0,"KillError":"","KillReason":"","StartDelay":0,"DownloadError":"","ValidationError":"","DiskLimit":0,"FailedSibling":"","VaultError":"","TaskSignalReason":"","TaskSignal":"","DriverMessage":"","GenericSource":""},`+
		`{"Type":"Task Setup","Time":%d,"Message":"Building Task Directory","DisplayMessage":"Building Task Directory","Details":{"message":"Building Task Directory"},"FailsTask":false,"RestartReason":"","SetupError":"","DriverError":"","ExitCode":0,"Signal":0,"KillTimeout":0,"KillError":"","KillReason":"","StartDelay":0,"DownloadError":"","ValidationError":"","DiskLimit":0,"FailedSibling":"","VaultError":"","TaskSignalReason":"","TaskSignal":"","DriverMessage":"","GenericSource":""},`+
		`{"Type":"Driver","Time":%d,"Message":"","DisplayMessage":"Downloading image","Details":{"image":"registry.service.consul:5000/web:1.4.%d"},"FailsTask":false,"RestartReason":"","SetupError":"","DriverError":"","ExitCode":0,"Signal":0,"KillTimeout":0,"KillError":"","KillReason":"","StartDelay":0,"DownloadError":"","ValidationError":"","DiskLimit":0,"FailedSibling":"","VaultError":"","TaskSignalReason":"","TaskSignal":"","DriverMessage":"Downloading image","GenericSource":""},`+
		`{"Type":"Started","Time":%d,"Message":"","DisplayMessage":"Task started by client","Details":{},"FailsTask":false,"RestartReason":"","SetupError":"","DriverError":"","ExitCode":0,"Signal":0,"KillTimeout":0,"KillError":"","KillReason":"","StartDelay":0,"DownloadError":"","ValidationError":"","DiskLimit":0,"FailedSibling":"","VaultError":"","TaskSignalReason":"","TaskSignal":"","DriverMessage":"","GenericSource":""}],`+
		`"TaskHandle":null}},"AllocStates":null,"PreviousAllocation":"","NextAllocation":"","DeploymentID":%q,"DeploymentStatus":{"Healthy":true,"Timestamp":"2025-09-04T15:33:31.%09dZ","Canary":false,"ModifyIndex":%d},`+
		`"RescheduleTracker":null,"NetworkStatus":{"InterfaceName":"eth0","Address":"172.26.64.%d","AddressIPv6":"","DNS":null},"FollowupEvalID":"","PreemptedAllocations":null,"PreemptedByAllocation":"","SignedIdentities":null,"SigningKeyID":"",`+
		`"Resources":null,"CreateIndex":%d,"ModifyIndex":%d,"AllocModifyIndex":%d,"CreateTime":%d,"ModifyTime":%d}}`,
		id, namespace, uuid(2, i), job, i%10, uuid(3, i%3), i%3, job,
		i%256, i%200+10, 20000+i%10000, 20000+i%10000, i%256, i%200+10,
		uuid(3, i%3), 183724+i,
		i%1000000000, t, t+1000, t+2000, i%50, t+3000,
		uuid(4, i), i%1000000000, 1000+i,
		i%250, 1000+i, 1000+i, 1000+i, t, t+5000)
	return Event{
		Topic: "Allocation", Type: "AllocationUpdated", Key: id, Namespace: namespace,
		FilterKeys: []string{job, uuid(4, i)}, Payload: json.RawMessage(payload),
	}
}

// JobEvent returns a JobRegistered event for job, version i.
func JobEvent(i int, job, namespace string) Event {
	t := baseTime + int64(i)*7_000_001
	var tasks strings.Builder
	for k := range 2 {
		if k > 0 {
			tasks.WriteByte(',')
		}
		fmt.Fprintf(&tasks, `{"Name":"task%d","Driver":"docker","User":"","Config":{"image":"registry.service.consul:5000/%s:1.4.%d","ports":["http"],"args":["-listen",":8080","-log-level","info"]},`+
			`"Env":{"APP_ENV":"production","GOMAXPROCS":"2"},"Services":null,"Vault":null,"Consul":null,"Templates":[{"SourcePath":"","DestPath":"local/config.hcl","EmbeddedTmpl":"{{ with nomadVar \"nomad/jobs/%s\" }}token = \"{{ .token }}\"{{ end }}","ChangeMode":"restart","ChangeSignal":"","ChangeScript":null,"Splay":5000000000,"Perms":"0644","Uid":null,"Gid":null,"LeftDelim":"{{","RightDelim":"}}","Envvars":false,"VaultGrace":0,"Wait":null,"ErrMissingKey":false}],`+
			`"Constraints":null,"Affinities":null,"Resources":{"CPU":500,"Cores":0,"MemoryMB":256,"MemoryMaxMB":0,"DiskMB":0,"IOPS":0,"Networks":null,"Devices":null,"NUMA":null,"SecretsMB":0},"RestartPolicy":{"Attempts":2,"Interval":1800000000000,"Delay":15000000000,"Mode":"fail","RenderTemplates":false},`+
			`"DispatchPayload":null,"Lifecycle":null,"Meta":null,"KillTimeout":5000000000,"LogConfig":{"MaxFiles":10,"MaxFileSizeMB":10,"Disabled":false},"Artifacts":null,"Leader":false,"ShutdownDelay":0,"VolumeMounts":null,"ScalingPolicies":null,"KillSignal":"","Kind":"","CSIPluginConfig":null,"Identity":{"Name":"default","Audience":["nomadproject.io"],"ChangeMode":"","ChangeSignal":"","Env":false,"File":true,"Filepath":"","ServiceName":"","TTL":3600000000000},"Identities":null,"Actions":null,"Schedule":null}`,
			k, job, i%50, job)
	}
	payload := fmt.Sprintf(`{"Job":{"Stop":false,"Region":"global","Namespace":%q,"ID":%q,"ParentID":"","Name":%q,"Type":"service","Priority":50,"AllAtOnce":false,"Datacenters":["*"],"NodePool":"default","Constraints":null,"Affinities":null,"Spreads":null,`+
		`"TaskGroups":[{"Name":"web","Count":3,"Update":{"Stagger":30000000000,"MaxParallel":1,"HealthCheck":"checks","MinHealthyTime":10000000000,"HealthyDeadline":300000000000,"ProgressDeadline":600000000000,"AutoRevert":true,"AutoPromote":false,"Canary":0},"Migrate":{"MaxParallel":1,"HealthCheck":"checks","MinHealthyTime":10000000000,"HealthyDeadline":300000000000},`+
		`"Constraints":null,"Scaling":null,"RestartPolicy":{"Attempts":2,"Interval":1800000000000,"Delay":15000000000,"Mode":"fail","RenderTemplates":false},"Disconnect":null,"Tasks":[%s],"EphemeralDisk":{"Sticky":false,"SizeMB":300,"Migrate":false},"Meta":null,`+
		`"ReschedulePolicy":{"Attempts":0,"Interval":0,"Delay":30000000000,"DelayFunction":"exponential","MaxDelay":3600000000000,"Unlimited":true},"Affinities":null,"Spreads":null,"Networks":[{"Mode":"bridge","Device":"","CIDR":"","IP":"","Hostname":"","MBits":0,"DNS":null,"ReservedPorts":null,"DynamicPorts":[{"Label":"http","Value":0,"To":8080,"HostNetwork":"default","IgnoreCollision":false}]}],"Consul":{"Namespace":"","Cluster":"default","Partition":""},"Services":null,"Volumes":null,"ShutdownDelay":null,"StopAfterClientDisconnect":null,"MaxClientDisconnect":null,"PreventRescheduleOnLost":false}],`+
		`"Update":{"Stagger":30000000000,"MaxParallel":1,"HealthCheck":"","MinHealthyTime":0,"HealthyDeadline":0,"ProgressDeadline":0,"AutoRevert":false,"AutoPromote":false,"Canary":0},"Multiregion":null,"Periodic":null,"ParameterizedJob":null,"Dispatched":false,"DispatchIdempotencyToken":"","Payload":null,"Meta":{"owner":"platform","git_sha":"%07x"},"ConsulToken":"","ConsulNamespace":"","VaultToken":"","VaultNamespace":"","NomadTokenID":"",`+
		`"Status":"running","StatusDescription":"","Stable":true,"Version":%d,"SubmitTime":%d,"CreateIndex":%d,"ModifyIndex":%d,"JobModifyIndex":%d,"VersionTag":null,"UI":null}}`,
		namespace, job, job, tasks.String(), i*2654435761&0xfffffff, i, t, 100+i, 200+i, 200+i)
	return Event{
		Topic: "Job", Type: "JobRegistered", Key: job, Namespace: namespace,
		FilterKeys: nil, Payload: json.RawMessage(payload),
	}
}
