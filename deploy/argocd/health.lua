-- Argo CD health check for iam.accesstoken.io/AccessToken (install: see README, "Argo CD").
--
-- A token the owner revoked, one past its expiry, and one suspended (by its scope's kill
-- switch or for being idle) are states chosen on purpose or reached by design, not faults:
-- they show as Suspended, never Degraded. Degraded is for a token the operator cannot issue
-- (phase Failed, or Stalled=True). Until the operator has written a status for the current
-- spec (no status, an older observedGeneration, or Reconciling=True) it is Progressing.
local hs = {}

local function condition(status, type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function message(ready, fallback)
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to see the token"
  return hs
end

local ready = condition(status, "Ready")
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the latest spec"
  return hs
end

local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message(reconciling, "The operator is issuing the token")
  return hs
end

local phase = status.phase
local stalled = condition(status, "Stalled")
if phase == "Failed" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  hs.message = message(ready, "The token cannot be issued")
  return hs
end

if phase == "Active" then
  hs.status = "Healthy"
  if status.expiresAt ~= nil then
    hs.message = "Active until " .. status.expiresAt
  else
    hs.message = "Active"
  end
  return hs
end

-- Chosen or reached by design, and reversible by a spec change: never Degraded.
local resting = {
  Revoked = "Revoked (spec.revoked: true)",
  Expired = "Expired",
  Suspended = "Suspended",
}
if resting[phase] ~= nil then
  hs.status = "Suspended"
  hs.message = message(ready, resting[phase])
  return hs
end

hs.status = "Progressing"
hs.message = message(ready, "Waiting for the token to be issued")
return hs
