package inject

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"teledock.dev/teledock/agent/agentconfig"
)

// ConfigMapName is the ConfigMap, one per namespace, that holds the agent configs of the
// namespace's workloads, keyed by workload name.
const ConfigMapName = "teledock-agents"

// managedByLabel marks what teledock created, so that an uninstall finds it.
const managedByLabel = "app.kubernetes.io/managed-by"

// ErrNoConfig means a workload has no agent config: it gets no agent.
var ErrNoConfig = errors.New("no agent config")

// ConfigSource finds the agent config of a workload.
type ConfigSource interface {
	// AgentConfig returns the workload's config, or an error wrapping ErrNoConfig.
	AgentConfig(ctx context.Context, namespace, workload string) (AgentConfig, error)
}

// ConfigMapStore keeps agent configs in each namespace's ConfigMapName ConfigMap.
type ConfigMapStore struct {
	client kubernetes.Interface
}

var _ ConfigSource = (*ConfigMapStore)(nil)

// NewConfigMapStore returns a store that reads and writes through client.
func NewConfigMapStore(client kubernetes.Interface) (*ConfigMapStore, error) {
	if client == nil {
		return nil, errors.New("nil kubernetes client")
	}
	return &ConfigMapStore{client: client}, nil
}

// AgentConfig implements ConfigSource.
func (s *ConfigMapStore) AgentConfig(ctx context.Context, namespace, workload string) (AgentConfig, error) {
	cm, err := s.client.CoreV1().ConfigMaps(namespace).Get(ctx, ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return AgentConfig{}, fmt.Errorf("%w for %s/%s", ErrNoConfig, namespace, workload)
	}
	if err != nil {
		return AgentConfig{}, fmt.Errorf("get configmap %s/%s: %w", namespace, ConfigMapName, err)
	}
	data, ok := cm.Data[workload]
	if !ok {
		return AgentConfig{}, fmt.Errorf("%w for %s/%s", ErrNoConfig, namespace, workload)
	}
	cfg, err := agentconfig.Parse([]byte(data))
	if err != nil {
		return AgentConfig{}, fmt.Errorf("configmap %s/%s key %s: %w", namespace, ConfigMapName, workload, err)
	}
	if cfg.Namespace != namespace || cfg.WorkloadName != workload {
		return AgentConfig{}, fmt.Errorf("configmap %s/%s key %s: %w: it is for %s/%s", namespace, ConfigMapName, workload,
			agentconfig.ErrInvalid, cfg.Namespace, cfg.WorkloadName)
	}
	return cfg, nil
}

// Put stores cfg under its workload's name, creating the ConfigMap when needed.
func (s *ConfigMapStore) Put(ctx context.Context, cfg AgentConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	data, err := cfg.YAML()
	if err != nil {
		return err
	}
	cms := s.client.CoreV1().ConfigMaps(cfg.Namespace)
	// Several managers' requests may race on one ConfigMap; a lost race is retried on fresh data.
	err = retry.OnError(retry.DefaultRetry, retryable, func() error {
		cm, err := cms.Get(ctx, ConfigMapName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm = &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{
					Name: ConfigMapName, Namespace: cfg.Namespace,
					Labels: map[string]string{managedByLabel: "teledock"},
				},
				Data: map[string]string{cfg.WorkloadName: string(data)},
			}
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		if cm.Data == nil {
			cm.Data = make(map[string]string)
		}
		cm.Data[cfg.WorkloadName] = string(data)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("store agent config of %s/%s: %w", cfg.Namespace, cfg.WorkloadName, err)
	}
	return nil
}

// Delete removes the workload's config, and the ConfigMap with the last one, so that nothing
// lingers after the last agent is gone. Deleting what is not there is not an error.
func (s *ConfigMapStore) Delete(ctx context.Context, namespace, workload string) error {
	cms := s.client.CoreV1().ConfigMaps(namespace)
	err := retry.OnError(retry.DefaultRetry, retryable, func() error {
		cm, err := cms.Get(ctx, ConfigMapName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if _, ok := cm.Data[workload]; !ok {
			return nil
		}
		delete(cm.Data, workload)
		if len(cm.Data) == 0 {
			return cms.Delete(ctx, ConfigMapName, metav1.DeleteOptions{
				Preconditions: &metav1.Preconditions{ResourceVersion: &cm.ResourceVersion},
			})
		}
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete agent config of %s/%s: %w", namespace, workload, err)
	}
	return nil
}

func retryable(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}
