// cgroup-layout.ts — where the kubelet puts a pod's cgroup, by its naming rules for the cgroupfs and
// systemd drivers (pkg/kubelet/cm: CgroupName.ToCgroupfs / ToSystemd). Pure: paths are policy paths
// (under the cgroup2 mount); which of them exist is asked of the caller.

export type CgroupDriver = 'systemd' | 'cgroupfs';
export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';
export const QOS_CLASSES: readonly QosClass[] = ['Guaranteed', 'Burstable', 'BestEffort'];

export interface KubeletLayout {
  /** Where the node's cgroup tree begins under the cgroup2 mount: "/" on a node; a test root in tests. */
  prefix: string;
  /** The kubelet's --cgroup-root: "/" (default), "/kubelet" (kind), or a slice such as "/kubelet.slice". */
  cgroupRoot: string;
  /** The drivers to consider; the directories that exist decide between them. */
  drivers: CgroupDriver[];
}

export const DEFAULT_LAYOUT: KubeletLayout = { prefix: '/', cgroupRoot: '/', drivers: ['systemd', 'cgroupfs'] };

/** The kubelet's --cgroup-root as name components, in either spelling ("/kubelet", "/kubelet.slice"). */
export function rootComponents(cgroupRoot: string): string[] {
  const parts = cgroupRoot.split('/').filter(Boolean);
  const last = parts.at(-1);
  // A systemd spelling names the whole path in its last slice: kubelet-foo.slice = [kubelet, foo].
  if (last?.endsWith('.slice'))
    return last
      .slice(0, -'.slice'.length)
      .split('-')
      .filter(Boolean)
      .map((c) => c.replace(/_/g, '-'));
  return parts;
}

/** The kubelet's cgroupfs form: components joined by "/". */
function toCgroupfs(name: string[]): string {
  return `/${name.join('/')}`;
}

/** The kubelet's systemd form: "-" in a component becomes "_", then the slice is expanded into its
 * parents (systemd's ExpandSlice): [kubepods, burstable, pod1-2] →
 * /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice. */
function toSystemd(name: string[]): string {
  if (name.length === 0) return '/';
  let path = '';
  let prefix = '';
  for (const c of name.map((p) => p.replace(/-/g, '_'))) {
    path += `/${prefix}${c}.slice`;
    prefix += `${c}-`;
  }
  return path;
}

function join(prefix: string, p: string): string {
  const base = prefix === '/' ? '' : prefix.replace(/\/+$/, '');
  return p === '/' ? base || '/' : `${base}${p}`;
}

/** The QoS class's components below kubepods: Guaranteed pods sit in kubepods itself. */
function qosComponents(qos: QosClass): string[] {
  return qos === 'Guaranteed' ? [] : [qos.toLowerCase()];
}

function path(layout: KubeletLayout, driver: CgroupDriver, name: string[]): string {
  const full = [...rootComponents(layout.cgroupRoot), ...name];
  return join(layout.prefix, driver === 'systemd' ? toSystemd(full) : toCgroupfs(full));
}

export interface QosParent {
  driver: CgroupDriver;
  /** null: kubepods itself (the parent of Guaranteed pods and of the other QoS cgroups). */
  qos: QosClass | null;
  path: string;
}

/** The cgroups under which the kubelet creates pod cgroups (the guard goes on these). */
export function qosParents(layout: KubeletLayout): QosParent[] {
  return layout.drivers.flatMap((driver) => [
    { driver, qos: null, path: path(layout, driver, ['kubepods']) },
    ...(['Burstable', 'BestEffort'] as const).map((qos) => ({
      driver,
      qos,
      path: path(layout, driver, ['kubepods', ...qosComponents(qos)]),
    })),
  ]);
}

export interface Candidate {
  driver: CgroupDriver;
  qos: QosClass;
  path: string;
}

/** Where pod `uid` of class `qos` (every class when unknown) would be, for each driver of the layout. */
export function podCgroupCandidates(layout: KubeletLayout, uid: string, qos?: QosClass): Candidate[] {
  const classes = qos ? [qos] : QOS_CLASSES;
  return layout.drivers.flatMap((driver) =>
    classes.map((q) => ({
      driver,
      qos: q,
      path: path(layout, driver, ['kubepods', ...qosComponents(q), `pod${uid}`]),
    })),
  );
}

export type Resolved =
  | { found: true; path: string; driver: CgroupDriver }
  /** Not there (yet): `expected` is where it will be when the parent of the first candidate exists. */
  | { found: false; tried: string[]; expected: string | null; parentExists: boolean };

/**
 * Confirms a candidate against the directories that exist: the one that exists wins. Without one, the
 * candidate whose QoS parent exists is where the kubelet will create it (a pod not started yet); when
 * no QoS parent exists, the layout is not one this node uses (or kubelet has not set it up yet).
 */
export function resolvePodCgroup(candidates: Candidate[], exists: (path: string) => boolean): Resolved {
  for (const c of candidates) if (exists(c.path)) return { found: true, path: c.path, driver: c.driver };
  const parent = (p: string) => p.slice(0, p.lastIndexOf('/')) || '/';
  const ready = candidates.find((c) => exists(parent(c.path)));
  return {
    found: false,
    tried: candidates.map((c) => c.path),
    expected: ready?.path ?? null,
    parentExists: Boolean(ready),
  };
}

/** The pod UID a pod cgroup's directory name carries ("pod<uid>", "kubepods-burstable-pod<uid_>.slice"). */
export function podUidOfCgroup(dirName: string): string | null {
  const fs = /^pod([0-9a-f-]{8,})$/i.exec(dirName);
  if (fs) return fs[1]!.toLowerCase();
  const sd = /(?:^|-)pod([0-9a-f_]{8,})\.slice$/i.exec(dirName);
  if (sd) return sd[1]!.replace(/_/g, '-').toLowerCase();
  return null;
}
