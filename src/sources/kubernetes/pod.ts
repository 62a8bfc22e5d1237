// pod.ts — what a pod means to meshredir: enrolled or not (labels and annotations of the pod and its
// namespace), which template, which per-pod overrides, and the policy's name. Pure.
import { createHash } from 'node:crypto';
import { parseCidr } from '../../policy/addr.js';
import type { Overrides } from '../../policy/template.js';
import { QOS_CLASSES, type QosClass } from './cgroup-layout.js';

/** The enrolment switch: a namespace label; a pod label or annotation (which wins over the namespace). */
export const REDIRECT = 'meshredir.io/redirect';
/** The RedirectPolicyTemplate to use: pod annotation, else namespace annotation or label; else "default". */
export const TEMPLATE = 'meshredir.io/template';
export const DEFAULT_TEMPLATE = 'default';
/** Per-pod overrides (pod annotations, comma-separated): includes replace the template's list, excludes add. */
export const OVERRIDES = {
  includePorts: 'meshredir.io/include-outbound-ports',
  excludePorts: 'meshredir.io/exclude-outbound-ports',
  includeCidrs: 'meshredir.io/include-outbound-cidrs',
  excludeCidrs: 'meshredir.io/exclude-outbound-cidrs',
  inboundExcludePorts: 'meshredir.io/exclude-inbound-ports',
} as const;
/** A static pod's mirror carries the UID the kubelet (and so the pod's cgroup) knows it by. */
const MIRROR = 'kubernetes.io/config.mirror';

/** The fields read from a Pod (the same in client-node's V1Pod and the watch's plain JSON). */
export interface PodLike {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: { nodeName?: string; hostNetwork?: boolean };
  status?: { qosClass?: string; phase?: string };
}

export interface NamespaceLike {
  metadata?: { name?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
}

export type Decision =
  | { kind: 'enrolled'; template: string; overrides: Overrides; why: string }
  | { kind: 'pass'; why: string }
  /** Enrolment or overrides cannot be read: the pod gets neither a policy nor a pass (the guard holds it). */
  | { kind: 'invalid'; errors: string[] };

export function podKey(p: PodLike): string {
  return `${p.metadata?.namespace ?? ''}/${p.metadata?.name ?? ''}`;
}

/** The UID of the pod's cgroup: a mirror pod's is its static pod's, from the mirror annotation. */
export function cgroupUid(p: PodLike): string | undefined {
  return p.metadata?.annotations?.[MIRROR] || p.metadata?.uid;
}

export function qosOf(p: PodLike): QosClass | undefined {
  const q = p.status?.qosClass;
  return QOS_CLASSES.find((c) => c === q);
}

/** Where the pod came from, as Policy.file says it. */
export function podOrigin(p: PodLike): string {
  return `pod ${podKey(p)} (uid ${p.metadata?.uid ?? '?'})`;
}

const MAX_NAME = 253;

/** The policy's name: pod.<namespace>.<name> (namespaces have no dots, so it is unambiguous); a name too
 * long for a policy keeps its start and ends with a hash of the whole. */
export function policyName(p: PodLike): string {
  const full = `pod.${p.metadata?.namespace ?? ''}.${p.metadata?.name ?? ''}`;
  if (full.length <= MAX_NAME) return full;
  const hash = createHash('sha256').update(full).digest('hex').slice(0, 12);
  return `${full.slice(0, MAX_NAME - hash.length - 1).replace(/[.-]+$/, '')}-${hash}`;
}

function switchValue(v: string | undefined, where: string, errors: string[]): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === 'enabled') return true;
  if (v === 'disabled') return false;
  errors.push(`${where} ${REDIRECT}: ${JSON.stringify(v)} is neither "enabled" nor "disabled"`);
  return undefined;
}

function ports(v: string, name: string, errors: string[]): number[] {
  const out: number[] = [];
  for (const s of v.split(',').map((x) => x.trim())) {
    if (s === '') continue;
    const n = /^\d+$/.test(s) ? Number(s) : NaN;
    if (!(n >= 1 && n <= 65535)) errors.push(`annotation ${name}: ${JSON.stringify(s)} is not a port (1-65535)`);
    else out.push(n);
  }
  return out;
}

function cidrs(v: string, name: string, errors: string[]): string[] {
  const out: string[] = [];
  for (const s of v.split(',').map((x) => x.trim())) {
    if (s === '') continue;
    const r = parseCidr(s);
    if (typeof r === 'string') errors.push(`annotation ${name}: ${r}`);
    else out.push(s);
  }
  return out;
}

/** The pod's overrides from its annotations. */
export function overridesOf(p: PodLike, errors: string[]): Overrides {
  const a = p.metadata?.annotations ?? {};
  const o: Overrides = {};
  for (const k of ['includePorts', 'excludePorts', 'inboundExcludePorts'] as const)
    if (a[OVERRIDES[k]] !== undefined) o[k] = ports(a[OVERRIDES[k]]!, OVERRIDES[k], errors);
  for (const k of ['includeCidrs', 'excludeCidrs'] as const)
    if (a[OVERRIDES[k]] !== undefined) o[k] = cidrs(a[OVERRIDES[k]]!, OVERRIDES[k], errors);
  return o;
}

/** Enrolled or not, and with what. hostNetwork pods are never enrolled: they are the node's network. */
export function decide(p: PodLike, ns: NamespaceLike | undefined): Decision {
  if (p.spec?.hostNetwork) return { kind: 'pass', why: 'hostNetwork pod (never enrolled)' };
  const errors: string[] = [];
  const byPodLabel = switchValue(p.metadata?.labels?.[REDIRECT], 'pod label', errors);
  const byPodAnnotation = switchValue(p.metadata?.annotations?.[REDIRECT], 'pod annotation', errors);
  const byNamespace = switchValue(ns?.metadata?.labels?.[REDIRECT], `namespace ${p.metadata?.namespace} label`, errors);
  if (byPodLabel !== undefined && byPodAnnotation !== undefined && byPodLabel !== byPodAnnotation)
    errors.push(`pod label and annotation ${REDIRECT} disagree`);
  if (errors.length) return { kind: 'invalid', errors };
  const pod = byPodLabel ?? byPodAnnotation;
  const enrolled = pod ?? byNamespace ?? false;
  const why =
    pod !== undefined
      ? `pod ${byPodLabel !== undefined ? 'label' : 'annotation'} ${REDIRECT}=${pod ? 'enabled' : 'disabled'}`
      : byNamespace !== undefined
        ? `namespace label ${REDIRECT}=${byNamespace ? 'enabled' : 'disabled'}`
        : `no ${REDIRECT} label or annotation`;
  if (!enrolled) return { kind: 'pass', why };
  const overrides = overridesOf(p, errors);
  if (errors.length) return { kind: 'invalid', errors };
  const template =
    p.metadata?.annotations?.[TEMPLATE] ??
    ns?.metadata?.annotations?.[TEMPLATE] ??
    ns?.metadata?.labels?.[TEMPLATE] ??
    DEFAULT_TEMPLATE;
  return { kind: 'enrolled', template, overrides, why };
}
