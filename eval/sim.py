"""A tabletop task suite in MuJoCo, controlled and observed the way LIBERO is (eval/README in the main README).

The scene is written here from scratch in MJCF: a table, a floating parallel gripper moved through a mocap weld (the
role of LIBERO's OSC controller), two cubes and a cylinder, and two static receptacles (a bowl and a plate).

Control (LIBERO's 7-D OSC_POSE action, robosuite conventions):
  a[0:3]  end-effector position delta, in [-1, 1] x POS_SCALE metres, applied to the measured pose;
  a[3:6]  end-effector rotation delta as an axis-angle vector, in [-1, 1] x ROT_SCALE radians;
  a[6]    gripper: -1 open, +1 close.
Observations: a front camera ("agentview") and a wrist camera ("eye_in_hand"), rendered upright (H, W, 3) uint8, and
LIBERO's 8-number proprio: eef position (3), eef orientation as axis-angle (3), the two finger joints (2).
Success is decided from the simulator's state (object positions), never from images.
"""
from __future__ import annotations

import dataclasses
import math
import os

os.environ.setdefault("MUJOCO_GL", "osmesa")  # EGL does not work without a GPU driver; OSMesa renders on the CPU

import mujoco
import numpy as np

CONTROL_DT = 0.05  # 20 Hz, as LIBERO
POS_SCALE = 0.02   # metres per unit of a[0:3] per step
ROT_SCALE = 0.2    # radians per unit of a[3:6] per step
FINGER_OPEN = 0.045
WORKSPACE_LO = np.array([-0.25, -0.3, 0.005])
WORKSPACE_HI = np.array([0.25, 0.3, 0.3])
HOME = np.array([-0.15, 0.0, 0.2])

CUBE_HALF = 0.02
BOWL_RADIUS = 0.065
PLATE_RADIUS = 0.07
# Objects not in a task's scene wait here, off the table and out of both cameras' view.
PARK = np.array([1.5, 0.0, -0.73])


def _bowl_walls(n: int = 10) -> str:
    walls = []
    seg = 2 * BOWL_RADIUS * math.tan(math.pi / n) / 2 + 0.002
    for i in range(n):
        a = 2 * math.pi * i / n
        x, y = BOWL_RADIUS * math.cos(a), BOWL_RADIUS * math.sin(a)
        walls.append(f'<geom type="box" size="0.004 {seg:.4f} 0.02" pos="{x:.4f} {y:.4f} 0.022" '
                     f'euler="0 0 {a:.4f}" material="bowl"/>')
    return "\n        ".join(walls)


def _movable(name: str, pos: str, geom: str) -> str:
    """A free 50 g object (a cube or the cylinder)."""
    return (f'<body name="{name}" pos="{pos}">\n      <freejoint name="{name}"/>\n'
            f'      <geom {geom} mass="0.05"/>\n    </body>')


SCENE_XML = f"""
<mujoco model="m2vla-tabletop">
  <compiler angle="radian"/>
  <option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual><global offwidth="640" offheight="640"/><quality shadowsize="0"/><headlight diffuse="0.3 0.3 0.3" ambient="0.25 0.25 0.25" specular="0 0 0"/></visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.55 0.45 0.35" rgb2="0.5 0.4 0.3" width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="6 6"/>
    <material name="bowl" rgba="0.85 0.75 0.6 1" specular="0.1"/>
    <material name="plate" rgba="0.2 0.7 0.25 1"/>
    <material name="gripper" rgba="0.25 0.25 0.3 1"/>
  </asset>
  <default>
    <geom friction="1.2 0.01 0.001" solref="0.01 1"/>
  </default>
  <worldbody>
    <light pos="0 0 1.5" dir="0 0 -1" diffuse="0.8 0.8 0.8"/>
    <light pos="0.6 -0.5 1.0" dir="-0.5 0.4 -0.8" diffuse="0.3 0.3 0.3"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" rgba="0.3 0.3 0.32 1"/>
    <geom name="table" type="box" size="0.4 0.45 0.02" pos="0 0 -0.02" material="table"/>
    <camera name="agentview" pos="0.45 0 0.6" xyaxes="0 1 0 -0.72 0 0.694" fovy="45"/>

    <body name="bowl" pos="0.12 -0.08 0">
      <geom type="cylinder" size="{BOWL_RADIUS} 0.002" pos="0 0 0.002" material="bowl"/>
        {_bowl_walls()}
    </body>
    <body name="plate" pos="0.12 0.1 0">
      <geom type="cylinder" size="{PLATE_RADIUS} 0.003" pos="0 0 0.003" material="plate"/>
    </body>

    {_movable("red_cube", "0 -0.12 0.02", f'type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" rgba="0.85 0.1 0.1 1"')}
    {_movable("blue_cube", "0 0.12 0.02", f'type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" rgba="0.1 0.2 0.9 1"')}
    {_movable("yellow_cylinder", f"{PARK[0]} {PARK[1]} {PARK[2]}",
              f'type="cylinder" size="0.019 {CUBE_HALF}" rgba="0.95 0.85 0.1 1"')}

    <body name="target" mocap="true" pos="{HOME[0]} {HOME[1]} {HOME[2]}"/>
    <body name="hand" pos="{HOME[0]} {HOME[1]} {HOME[2]}" gravcomp="1">
      <freejoint name="hand"/>
      <site name="eef" pos="0 0 0" size="0.005" rgba="1 0 0 0"/>
      <geom type="box" size="0.02 0.06 0.012" pos="0 0 0.07" material="gripper" mass="0.3"/>
      <geom type="cylinder" size="0.015 0.04" pos="0 0 0.12" material="gripper" mass="0.1"/>
      <camera name="eye_in_hand" pos="-0.045 0 0.085" xyaxes="0 -1 0 1 0 0.35" fovy="75"/>
      <body name="left_finger" pos="0 0 0" gravcomp="1">
        <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_OPEN}" damping="5" armature="0.01"/>
        <geom type="box" size="0.011 0.007 0.032" pos="0 0.007 0.026" material="gripper" mass="0.02" friction="2 0.02 0.001"/>
      </body>
      <body name="right_finger" pos="0 0 0" gravcomp="1">
        <joint name="finger_right" type="slide" axis="0 1 0" range="-{FINGER_OPEN} 0" damping="5" armature="0.01"/>
        <geom type="box" size="0.011 0.007 0.032" pos="0 -0.007 0.026" material="gripper" mass="0.02" friction="2 0.02 0.001"/>
      </body>
    </body>
  </worldbody>
  <equality>
    <weld body1="target" body2="hand" solref="0.01 1"/>
  </equality>
  <contact>
    <exclude body1="hand" body2="left_finger"/>
    <exclude body1="hand" body2="right_finger"/>
    <exclude body1="left_finger" body2="right_finger"/>
  </contact>
  <actuator>
    <position name="finger_left" joint="finger_left" kp="400" ctrlrange="0 {FINGER_OPEN}" forcerange="-15 15"/>
    <position name="finger_right" joint="finger_right" kp="400" ctrlrange="-{FINGER_OPEN} 0" forcerange="-15 15"/>
  </actuator>
</mujoco>
"""


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    instruction: str
    kind: str          # "place" (object into/onto a receptacle) or "lift"
    obj: str           # the object to move
    target: str | None  # the receptacle, for "place"
    scene_objects: tuple[str, ...]
    receptacles: tuple[str, ...] = ("bowl", "plate")
    held_out: bool = False


BOTH_CUBES = ("red_cube", "blue_cube")
# red_bowl / blue_bowl share the scene and differ only in the instruction: only the language path can tell them apart.
# The other scenes differ in which objects are on the table, so the camera shows which task it is.
TASKS = [
    Task("red_bowl", "put the red cube in the bowl", "place", "red_cube", "bowl", BOTH_CUBES),
    Task("blue_bowl", "put the blue cube in the bowl", "place", "blue_cube", "bowl", BOTH_CUBES),
    Task("red_plate", "put the red cube on the plate", "place", "red_cube", "plate", ("red_cube",)),
    Task("blue_plate", "put the blue cube on the plate", "place", "blue_cube", "plate", ("blue_cube",)),
    Task("lift_blue", "pick up the blue cube", "lift", "blue_cube", None, ("blue_cube",), receptacles=()),
    # Held out: never in the training demos; a cylinder where the red cube would be.
    Task("yellow_bowl", "put the yellow cylinder in the bowl", "place", "yellow_cylinder", "bowl",
         ("yellow_cylinder", "blue_cube"), held_out=True),
]
TASKS_BY_NAME = {t.name: t for t in TASKS}

# Nominal xy of each placement slot; every episode jitters them (seeded).
SLOTS = {"left": np.array([-0.02, -0.13]), "right": np.array([-0.02, 0.13]),
         "bowl": np.array([0.13, -0.07]), "plate": np.array([0.13, 0.1])}
OBJECT_SLOT = {"red_cube": "left", "yellow_cylinder": "left", "blue_cube": "right"}
OBJECT_JITTER = 0.025
RECEPTACLE_JITTER = 0.025


def quat2axisangle(quat_xyzw: np.ndarray) -> np.ndarray:
    """robosuite transform_utils.quat2axisangle (what LIBERO's proprio uses)."""
    q = np.array(quat_xyzw, dtype=np.float64)
    q[3] = np.clip(q[3], -1.0, 1.0)
    den = np.sqrt(1.0 - q[3] * q[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (q[:3] * 2.0 * math.acos(q[3])) / den


def _axisangle2quat_wxyz(v: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(v))
    if angle < 1e-9:
        return np.array([1.0, 0.0, 0.0, 0.0])
    axis = v / angle
    return np.concatenate([[math.cos(angle / 2)], axis * math.sin(angle / 2)])


class TabletopEnv:
    """One MuJoCo model; reset(task, seed) lays out the task's scene, step(action) advances one 20 Hz control step."""

    def __init__(self, image_size: int = 84):
        self.model = mujoco.MjModel.from_xml_string(SCENE_XML)
        self.data = mujoco.MjData(self.model)
        self.image_size = image_size
        self.renderer = mujoco.Renderer(self.model, image_size, image_size)
        self.substeps = int(round(CONTROL_DT / self.model.opt.timestep))
        m = self.model
        self.body = {n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n)
                     for n in ("hand", "target", "bowl", "plate", "red_cube", "blue_cube", "yellow_cylinder")}
        self.qadr = {n: m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)]
                     for n in ("hand", "red_cube", "blue_cube", "yellow_cylinder", "finger_left", "finger_right")}
        self.vadr = {n: m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)]
                     for n in ("red_cube", "blue_cube", "yellow_cylinder")}
        self.eef_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "eef")
        self.task: Task | None = None

    def close(self) -> None:
        self.renderer.close()

    # -- state -------------------------------------------------------------------------------------------------------
    def reset(self, task: Task, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self.task = task
        for i, name in enumerate(("bowl", "plate")):
            xy = SLOTS[name] + rng.uniform(-RECEPTACLE_JITTER, RECEPTACLE_JITTER, 2)
            # a receptacle not in the scene is a static body: it waits off the table, out of view
            m.body_pos[self.body[name]] = [xy[0], xy[1], 0.0] if name in task.receptacles else PARK + [0, 0.3 + 0.3 * i, 0]
        for i, name in enumerate(("red_cube", "blue_cube", "yellow_cylinder")):
            jitter = rng.uniform(-OBJECT_JITTER, OBJECT_JITTER, 2)
            yaw = rng.uniform(-0.3, 0.3)
            if name in task.scene_objects:
                xy = SLOTS[OBJECT_SLOT[name]] + jitter
                pos = [xy[0], xy[1], CUBE_HALF]
            else:
                pos = list(PARK + [0, 0.1 * i, 0])
            a = self.qadr[name]
            d.qpos[a:a + 3] = pos
            d.qpos[a + 3:a + 7] = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
        home = HOME + rng.uniform(-0.02, 0.02, 3)
        a = self.qadr["hand"]
        d.qpos[a:a + 3] = home
        d.qpos[a + 3:a + 7] = [1, 0, 0, 0]
        d.mocap_pos[0] = home
        d.mocap_quat[0] = [1, 0, 0, 0]
        d.qpos[self.qadr["finger_left"]] = FINGER_OPEN
        d.qpos[self.qadr["finger_right"]] = -FINGER_OPEN
        d.ctrl[:] = [FINGER_OPEN, -FINGER_OPEN]
        mujoco.mj_forward(m, d)
        for _ in range(10):  # let the objects settle on the table
            mujoco.mj_step(m, d)
        self.steps = 0
        return self.observation()

    def eef_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.eef_site].copy()

    def eef_quat_wxyz(self) -> np.ndarray:
        return self.data.xquat[self.body["hand"]].copy()

    def object_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self.body[name]].copy()

    def receptacle_pos(self, name: str) -> np.ndarray:
        return self.model.body_pos[self.body[name]].copy()

    def gripper_qpos(self) -> np.ndarray:
        d = self.data
        return np.array([d.qpos[self.qadr["finger_left"]], d.qpos[self.qadr["finger_right"]]])

    def proprio(self) -> np.ndarray:
        """LIBERO's 8 numbers: eef pos, eef axis-angle (from the (x, y, z, w) quaternion), finger joints."""
        w, x, y, z = self.eef_quat_wxyz()
        return np.concatenate([self.eef_pos(), quat2axisangle(np.array([x, y, z, w])), self.gripper_qpos()])

    def render(self, camera: str) -> np.ndarray:
        self.renderer.update_scene(self.data, camera=camera)
        return self.renderer.render().copy()

    def observation(self) -> dict:
        return {"agentview": self.render("agentview"), "eye_in_hand": self.render("eye_in_hand"),
                "proprio": self.proprio()}

    # -- control -----------------------------------------------------------------------------------------------------
    def step(self, action: np.ndarray, render: bool = True) -> dict | None:
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        d = self.data
        target = np.clip(self.eef_pos() + a[:3] * POS_SCALE, WORKSPACE_LO, WORKSPACE_HI)
        d.mocap_pos[0] = target
        dq = _axisangle2quat_wxyz(a[3:6] * ROT_SCALE)
        q = np.empty(4)
        mujoco.mju_mulQuat(q, dq, d.mocap_quat[0])
        mujoco.mju_normalize4(q)
        d.mocap_quat[0] = q
        opening = FINGER_OPEN * (1.0 - a[6]) / 2.0
        d.ctrl[:] = [opening, -opening]
        for _ in range(self.substeps):
            mujoco.mj_step(self.model, d)
        self.steps += 1
        return self.observation() if render else None

    # -- success -----------------------------------------------------------------------------------------------------
    def success(self) -> bool:
        t = self.task
        p = self.object_pos(t.obj)
        if t.kind == "lift":
            return bool(p[2] > 0.1)
        r = self.receptacle_pos(t.target)
        radius = BOWL_RADIUS - 0.015 if t.target == "bowl" else PLATE_RADIUS - 0.01
        resting = p[2] < 0.045  # on the receptacle's floor, not held above it
        return bool(np.linalg.norm(p[:2] - r[:2]) < radius and resting)
