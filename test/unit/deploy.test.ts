/** The Kubernetes manifests parse, and set only settings the service knows. */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { ConfigSchema } from '../../src/config.js';

const docs = (file: string) =>
  parseAllDocuments(readFileSync(new URL(`../../deploy/kubernetes/${file}`, import.meta.url), 'utf8')).map((d) => d.toJS());

describe('deploy/kubernetes', () => {
  it('wrapper.yaml: namespace, service account, secret, config, deployment and service', () => {
    const all = docs('wrapper.yaml');
    expect(all.map((d) => d.kind)).toEqual(['Namespace', 'ServiceAccount', 'Secret', 'ConfigMap', 'Deployment', 'Service']);
    const known = Object.keys(ConfigSchema.properties);
    for (const key of [...Object.keys(all[3].data), ...Object.keys(all[2].stringData)]) expect(known, key).toContain(key);
    expect(all[3].data.SANDBOX_BACKEND).toBe('agentcube');
    const container = all[4].spec.template.spec.containers[0];
    expect(container.envFrom.map((e: Record<string, { name: string }>) => Object.values(e)[0].name)).toEqual([
      'code-interpreter-wrapper',
      'code-interpreter-wrapper',
    ]);
  });

  it('code-interpreter.yaml: a CodeInterpreter the ConfigMap names', () => {
    const [ci] = docs('code-interpreter.yaml');
    const config = docs('wrapper.yaml')[3].data;
    expect(ci.apiVersion).toBe('runtime.agentcube.volcano.sh/v1alpha1');
    expect(ci.kind).toBe('CodeInterpreter');
    expect(ci.metadata.name).toBe(config.AGENTCUBE_CODE_INTERPRETER);
    expect(ci.metadata.namespace).toBe(config.AGENTCUBE_NAMESPACE);
  });
});
