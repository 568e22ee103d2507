"""Who subscribed to what (``WebhookTarget``), each message (``Delivery``), each try
(``DeliveryAttempt``), the workers sending them (``WorkerHeartbeat``), and the keys of the
webhook API (``ApiToken``)."""

import functools
import hashlib
import json
import secrets
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import DatabaseError, connections, models, router, transaction
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.functions import Now
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from model_utils.models import TimeStampedModel

from djwebhooks import conf, options
from djwebhooks.encoding import FORM, JSON
from djwebhooks.exceptions import WebhookImproperlyConfigured
from djwebhooks.signing import generate_secret, secret_key
from djwebhooks.ssrf import TargetURLRefused, check_target

if apps.apps_ready and not apps.is_installed("djwebhooks"):
    # Said before Django's own error, which names the model rather than the fix.
    raise WebhookImproperlyConfigured(
        "dj-webhooks is not installed: add 'djwebhooks' to INSTALLED_APPS in your "
        "settings, then run 'manage.py migrate' to create its tables."
    )


class DatabaseNow(Now):
    """``Now()`` in UTC on every database. Claims and due times are compared with this
    clock, never a host's, so hosts whose clocks disagree still agree.

    MySQL's ``CURRENT_TIMESTAMP`` is in the session's time zone, while Django keeps
    datetimes there in UTC. SQLite's clock has milliseconds, and its datetimes are text
    compared as text: the time is written to the microsecond, at the end of its
    millisecond, so that a row stamped in the same millisecond already counts as past.
    """

    def as_mysql(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template=SQL_NOW["mysql"], **extra_context)

    def as_sqlite(self, compiler, connection, **extra_context):
        template = SQL_NOW["sqlite"].replace("%", "%%%%")
        return self.as_sql(compiler, connection, template=template, **extra_context)


#: The database's time now, in UTC, as SQL (see ``DatabaseNow``).
SQL_NOW = {
    "postgresql": "STATEMENT_TIMESTAMP()",
    "mysql": "UTC_TIMESTAMP(6)",
    "sqlite": "(STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW') || '999')",
}


def copy_instance(template):
    """Return a new, unsaved model instance with ``template``'s field values.

    Many rows made from one template this way take a fraction of the time of as many
    ``Model.__init__`` calls, which convert every value and send two signals each.
    """
    instance = template.__class__.__new__(template.__class__)
    instance.__dict__.update(template.__dict__)
    instance._state = ModelState()
    return instance


def row_loader(model, using):
    """Return ``make(names, values)``, which gives what ``model.from_db(using, names,
    values)`` gives for a row of all of ``model``'s concrete fields, in order.

    ``Model.__init__`` sets each field through its descriptor and sends ``pre_init`` and
    ``post_init``; for a model whose ``__init__`` and fields are Django's own, and whose
    signals nothing listens to, that comes to filling the instance's ``__dict__``, which
    is all ``make`` does then. Any other model is made by its ``from_db``.
    """
    if not _plain_model(model) or pre_init.has_listeners(model) or \
            post_init.has_listeners(model):
        return lambda names, values: model.from_db(using, names, values)
    loaded = getattr(model, "_loaded", None)

    def make(names, values):
        instance = model.__new__(model)
        instance.__dict__.update(zip(names, values, strict=True))
        state = instance._state = ModelState()
        state.adding, state.db = False, using
        if loaded is not None:
            loaded(instance)
        return instance

    return make


@functools.cache
def _plain_model(model):
    """True when ``model``'s instances are made as any Django model's: ``__init__`` and
    ``from_db`` are Django's (or ``WebhookTarget``'s, which adds ``_loaded``), and each
    concrete field's attribute is a plain ``DeferredAttribute``."""
    own_from_db = model.from_db.__func__ in (models.Model.from_db.__func__,
                                             WebhookTarget.from_db.__func__)
    return (model.__init__ is models.Model.__init__ and own_from_db and all(
        type(getattr(model, field.attname, None)) in _PLAIN_DESCRIPTORS
        for field in model._meta.concrete_fields))


_PLAIN_DESCRIPTORS = (DeferredAttribute, ForeignKeyDeferredAttribute)


def validate_secret(value):
    """Raise ``ValidationError`` unless ``value`` is a secret requests can be signed with."""
    try:
        secret_key(value)
    except (TypeError, ValueError):
        raise ValidationError(
            _("This is not a usable signing secret: it must be whsec_ followed by base64 "
              "(as generated), such as whsec_%(example)s."),
            code="invalid_secret",
            params={"example": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
        ) from None


def validate_event_name(value):
    """Raise ``ValidationError`` unless ``value`` is a declared event."""
    declared = conf.get_events()
    if value not in declared:
        raise ValidationError(
            _("%(event)s is not a declared event. Choose one of: %(declared)s."),
            code="unknown_event",
            params={"event": value, "declared": ", ".join(sorted(declared)) or _("none")},
        )


def validate_headers(value):
    """Raise ``ValidationError`` unless ``value`` is headers a target may send."""
    try:
        options.check_headers(value)
    except options.OptionError as exc:
        raise ValidationError(str(exc), code="invalid_headers") from None


def validate_schedule(value):
    """Raise ``ValidationError`` unless ``value`` is a retry schedule a target may have."""
    if value is None:
        return
    try:
        options.check_schedule(value)
    except options.OptionError as exc:
        raise ValidationError(str(exc), code="invalid_schedule") from None


class WebhookTarget(TimeStampedModel):
    """A URL that an owner wants called when ``event`` happens (for ``identifier``)."""

    CONTENT_TYPE_CHOICES = [
        (JSON, _("JSON (application/json)")),
        (FORM, _("Form (application/x-www-form-urlencoded, one 'payload' field)")),
    ]

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="webhook_targets",
        verbose_name=_("owner"),
    )
    # Not ``choices``: declared events live in settings and may change without a migration.
    event = models.CharField(_("event"), max_length=128, db_index=True)
    identifier = models.CharField(
        _("identifier"),
        max_length=255,
        blank=True,
        default="",
        help_text=_("Narrows the subscription, e.g. to one project. Blank matches calls "
                    "made without an identifier."),
    )
    target_url = models.URLField(_("target URL"), max_length=2048)
    header_content_type = models.CharField(
        _("content type"), max_length=64, choices=CONTENT_TYPE_CHOICES, default=JSON
    )
    secret = models.CharField(
        _("signing secret"),
        max_length=128,
        default=generate_secret,
        validators=[validate_secret],
        help_text=_("Standard Webhooks secret (whsec_...) used to sign every request."),
    )
    previous_secret = models.CharField(
        _("previous signing secret"), max_length=128, blank=True, default="",
        validators=[validate_secret],
        help_text=_("The secret before the last rotation, still signed with until it expires."),
    )
    previous_secret_expires = models.DateTimeField(
        _("previous secret expires"), null=True, blank=True
    )
    is_active = models.BooleanField(_("active"), default=True)
    headers = models.JSONField(
        _("headers"), default=dict, blank=True, validators=[validate_headers],
        help_text=_("Sent with every request, such as Authorization or X-Api-Key. Shown "
                    "masked, like the secret."),
    )
    timeout = models.FloatField(
        _("timeout"), null=True, blank=True,
        help_text=_("Seconds a request may take, from looking up the host to the last byte "
                    "of the answer; at most the sender's TOTAL_TIMEOUT, which applies when "
                    "empty."),
    )
    retry_schedule = models.JSONField(
        _("retry schedule"), null=True, blank=True, validators=[validate_schedule],
        help_text=_("Waits before each retry, in seconds; the sender's RETRY_SCHEDULE "
                    "applies when empty, and an empty list means no retries."),
    )
    ordered = models.BooleanField(
        _("ordered"), default=False,
        help_text=_("Send its deliveries one at a time, in the order they were created: "
                    "one that fails holds back those after it until it succeeds, fails "
                    "for good or is skipped."),
    )
    max_in_flight = models.PositiveIntegerField(
        _("most requests at once"), null=True, blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(options.MAX_IN_FLIGHT)],
        help_text=_("The most requests each sending process makes to it at once; fewer "
                    "while it answers 429, 502, 503 or 504 or times out. The sender's "
                    "MAX_IN_FLIGHT applies when empty."),
    )
    rate_limit = models.PositiveIntegerField(
        _("rate limit"), null=True, blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(options.MAX_RATE_LIMIT)],
        help_text=_("The most requests a second, counted across every worker; no limit "
                    "when empty."),
    )
    consecutive_failures = models.PositiveIntegerField(
        _("consecutive failures"), default=0,
        help_text=_("Failed attempts since the last success."),
    )
    failing_since = models.DateTimeField(
        _("failing since"), null=True, blank=True,
        help_text=_("The first failed attempt since the last success."),
    )
    disabled_at = models.DateTimeField(_("disabled at"), null=True, blank=True)
    disabled_reason = models.CharField(_("disabled because"), max_length=255, blank=True,
                                       default="")

    class Meta:
        verbose_name = _("webhook target")
        verbose_name_plural = _("webhook targets")
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "event", "identifier", "target_url"],
                name="djwebhooks_unique_target",
            )
        ]
        indexes = [
            models.Index(fields=["event", "owner", "identifier"], name="djwebhooks_target_lookup"),
            # The few ordered targets, which every claim looks up.
            models.Index(fields=["ordered"], condition=models.Q(ordered=True),
                         name="djwebhooks_target_ordered"),
        ]

    def __str__(self):
        return f"{self.event} → {self.target_url}"

    #: The fields ``reset_health()`` clears.
    HEALTH_FIELDS = ("consecutive_failures", "failing_since", "disabled_at", "disabled_reason")

    @classmethod
    def from_db(cls, db, field_names, values, *args, **kwargs):
        target = super().from_db(db, field_names, values, *args, **kwargs)
        target._loaded()
        return target

    def _loaded(self):
        """Remember what was loaded, to see it change (``save``)."""
        self._saved_is_active = self.__dict__.get("is_active")

    def refresh_from_db(self, using=None, fields=None, **kwargs):
        super().refresh_from_db(using=using, fields=fields, **kwargs)
        if fields is None or "is_active" in fields:
            self._saved_is_active = self.__dict__.get("is_active")

    def save(self, *args, **kwargs):
        # Active now, inactive as loaded or last saved: turned back on (in the admin or in
        # code), so its health starts afresh.
        if self.pk and self.is_active and getattr(self, "_saved_is_active", None) is False:
            self.reset_health()
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], *self.HEALTH_FIELDS}
        super().save(*args, **kwargs)
        self._saved_is_active = self.is_active

    def reset_health(self):
        """Forget past failures and any automatic disabling (the row is not saved)."""
        self.consecutive_failures = 0
        self.failing_since = None
        self.disabled_at = None
        self.disabled_reason = ""

    def clean(self):
        super().clean()
        errors = {}
        if self.event:
            try:
                validate_event_name(self.event)
            except ValidationError as exc:
                errors["event"] = exc
        if self.target_url:
            try:
                check_target(self.target_url, conf.get_url_policy())
            except TargetURLRefused as exc:
                errors["target_url"] = ValidationError(str(exc), code="refused_url")
        if self.timeout is not None:
            try:
                options.check_timeout(self.timeout, conf.get_seconds("TOTAL_TIMEOUT"))
            except options.OptionError as exc:
                errors["timeout"] = ValidationError(str(exc), code="invalid_timeout")
        if errors:
            raise ValidationError(errors)

    def rotate_secret(self, grace=None, *, now=None):
        """Give the target a new secret, keeping the current one valid for ``grace``.

        ``grace`` is a ``timedelta`` or seconds (default ``SECRET_ROTATION_GRACE``, 24 h;
        at most 7 days). Until it ends, every request carries a signature made with each
        secret. The target is saved; the new secret is returned.
        """
        grace = conf.get_seconds("SECRET_ROTATION_GRACE") if grace is None else grace
        seconds = grace.total_seconds() if isinstance(grace, timedelta) else float(grace)
        if not 0 <= seconds <= conf.MAX_ROTATION_GRACE:
            raise ValueError(
                f"The grace period of a secret rotation must be between 0 and 7 days, got "
                f"{seconds:g} seconds."
            )
        now = now or timezone.now()
        using = router.db_for_write(WebhookTarget, instance=self)
        fields = ["secret", "previous_secret", "previous_secret_expires", "modified"]
        with transaction.atomic(using=using):
            # The secret as stored, under a row lock: a rotation made meanwhile (another
            # request, another process) becomes the previous secret, never lost.
            current = (WebhookTarget.objects.using(using).select_for_update()
                       .values_list("secret", flat=True).get(pk=self.pk))
            if seconds:
                self.previous_secret = current
                self.previous_secret_expires = now + timedelta(seconds=seconds)
            else:
                self.previous_secret, self.previous_secret_expires = "", None
            self.secret = generate_secret()
            self.save(using=using, update_fields=fields)
        return self.secret

    def signing_secrets(self, now=None):
        """The secrets every request is signed with: the current one, and the previous one
        while its grace period lasts."""
        now = now or timezone.now()
        if self.previous_secret and self.previous_secret_expires and \
                self.previous_secret_expires > now:
            return [self.secret, self.previous_secret]
        return [self.secret]

    @property
    def masked_headers(self):
        """The headers with their values masked, as the admin, the pages and the API show
        them."""
        return options.masked(self.headers)

    @property
    def masked_secret(self):
        """The secret with all but its prefix and last four characters hidden."""
        if not self.secret:
            return ""
        return f"{self.secret[:6]}…{self.secret[-4:]}"


class DeliveryQuerySet(models.QuerySet):
    """Queries over the delivery log."""

    def failed(self):
        """Deliveries that ended in failure."""
        return self.filter(status=Delivery.Status.FAILED)

    def pending(self):
        """Deliveries still waiting for an attempt."""
        return self.filter(status=Delivery.Status.PENDING)

    def finished(self):
        """Deliveries that will not be attempted again unless replayed."""
        return self.exclude(status=Delivery.Status.PENDING)

    def due(self, now=None):
        """Pending deliveries whose next attempt is due and that no live claim holds, by the
        database's clock (or at ``now``)."""
        now = DatabaseNow() if now is None else now
        return self.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now).filter(
            models.Q(claimed_until__isnull=True) | models.Q(claimed_until__lt=now)
        )


    def in_turn(self, now=None):
        """Leave out the deliveries of ordered targets that must wait for another of their
        target's: one created before them that is still pending, or one being sent (held
        by a live claim, by the database's clock or at ``now``)."""
        now = DatabaseNow() if now is None else now
        line = self.model._default_manager.filter(
            webhook_target_id=models.OuterRef("webhook_target_id"),
            status=Delivery.Status.PENDING,
        )
        ordered = WebhookTarget.objects.filter(ordered=True).values("pk")
        return self.filter(
            ~models.Q(webhook_target_id__in=ordered)
            | (~models.Exists(line.filter(pk__lt=models.OuterRef("pk")))
               & ~models.Exists(line.filter(claimed_until__gte=now)))
        )


class Delivery(TimeStampedModel):
    """One message to one target, with its status after the latest attempt."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        SUCCEEDED = "succeeded", _("succeeded")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")

    webhook_target = models.ForeignKey(
        WebhookTarget,
        on_delete=models.CASCADE,
        related_name="deliveries",
        verbose_name=_("webhook target"),
    )
    event = models.CharField(_("event"), max_length=128)
    payload_json = models.TextField(
        _("payload"), db_column="payload", default="{}",
        help_text=_("The data as sent: the JSON text the hook's return value was encoded to "
                    "when it was called."),
    )
    hash_value = models.CharField(
        _("message id"),
        max_length=64,
        help_text=_("Sent as the webhook-id header; the same on every attempt and replay."),
    )
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    attempt = models.PositiveIntegerField(_("attempts made"), default=0)
    success = models.BooleanField(_("success"), default=False)
    response_status = models.PositiveSmallIntegerField(_("last response status"), null=True,
                                                       blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    reason = models.CharField(
        _("reason"), max_length=255, blank=True, default="",
        help_text=_("Why the delivery is in its status: the retry scheduled, or why it stopped."),
    )
    claimed_by = models.CharField(
        _("claimed by"), max_length=255, blank=True, default="",
        help_text=_("The worker (or process) sending it now."),
    )
    claimed_until = models.DateTimeField(
        _("claimed until"), null=True, blank=True,
        help_text=_("When the claim expires unless its worker renews it; another worker may "
                    "take it then."),
    )

    queued_at = models.DateTimeField(
        _("queued at"), null=True, blank=True,
        help_text=_("When it was last handed to the backend (a retry handed over in "
                    "advance: the retry's time); empty when no queue holds it."),
    )

    replayed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+", verbose_name=_("replay asked by"),
        # Almost always empty: a partial index (Meta) keeps the NULLs out of it.
        db_index=False,
        help_text=_("Who replayed it, until its next attempt is recorded (which then names "
                    "them)."),
    )

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        verbose_name = _("delivery")
        verbose_name_plural = _("deliveries")
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(
                fields=["hash_value", "webhook_target"], name="djwebhooks_unique_message_target"
            )
        ]
        # Every index is written on each insert, and on each update that changes its
        # columns (every attempt changes the status), so there are few: lookups by message
        # id use the unique constraint's index, which begins with it; event gets a plain
        # index (not Django's extra LIKE index for a CharField's db_index); pending and
        # failed rows, the ones looked for by status, each have a partial index, which
        # the many succeeded rows stay out of.
        indexes = [
            # Workers look only at pending rows, in the order they claim them (due time,
            # then id), so a claim reads a few index entries, not every due row. MySQL and
            # MariaDB have no partial indexes: Django makes this one whole there, and it
            # serves claims just as well, because only pending deliveries have a
            # next_attempt_at; the others' NULLs lie outside the range a claim reads.
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=models.Q(status="pending"),
                name="djwebhooks_delivery_due",
            ),
            # Each target's pending deliveries in creation order: an ordered target's claim
            # asks whether one comes before the delivery it would take. (The status column
            # is for MySQL and MariaDB, where the index is whole.)
            models.Index(
                fields=["webhook_target", "status", "id"],
                condition=models.Q(status="pending"),
                name="djwebhooks_delivery_line",
            ),
            # Failed deliveries, oldest first, as they are listed and replayed.
            models.Index(
                fields=["created", "id"],
                condition=models.Q(status="failed"),
                name="djwebhooks_delivery_failed",
            ),
            models.Index(fields=["event"], name="djwebhooks_delivery_event"),
            # For deleting a user (SET NULL), without indexing every delivery's NULL.
            models.Index(fields=["replayed_by"], condition=models.Q(replayed_by__isnull=False),
                         name="djwebhooks_delivery_replayer"),
        ]

    def __str__(self):
        return f"{self.event} {self.hash_value} ({self.status})"

    @property
    def payload(self):
        """The data the hook returned (the envelope's ``data``), read from ``payload_json``."""
        cached = self.__dict__.get("_payload")
        if cached is None or cached[0] is not self.payload_json:
            cached = self.__dict__["_payload"] = (self.payload_json,
                                                  json.loads(self.payload_json))
        return cached[1]

    @payload.setter
    def payload(self, value):
        self.payload_json = json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False,
                                       separators=(",", ":"))


class DeliveryAttempt(models.Model):
    """One HTTP request made for a delivery, and what came of it."""

    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="attempts", verbose_name=_("delivery"),
        db_index=False,  # the unique (delivery, attempt) constraint's index serves
    )
    attempt = models.PositiveIntegerField(_("attempt"))
    success = models.BooleanField(_("success"), default=False)
    response_status = models.PositiveSmallIntegerField(_("response status"), null=True,
                                                       blank=True)
    response_message = models.TextField(_("response body (start)"), blank=True, default="")
    response_content_type = models.CharField(_("response content type"), max_length=255,
                                             blank=True, default="")
    error = models.TextField(_("error"), blank=True, default="")
    duration = models.PositiveIntegerField(_("duration (ms)"), default=0)
    notification = models.CharField(_("notification"), max_length=255, blank=True, default="")
    created = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)
    replayed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+", verbose_name=_("replayed by"),
        # Almost always empty: a partial index (Meta) keeps the NULLs out of it.
        db_index=False,
        help_text=_("Who replayed the delivery, for the first attempt after a replay."),
    )

    class Meta:
        verbose_name = _("delivery attempt")
        verbose_name_plural = _("delivery attempts")
        ordering = ["delivery", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "attempt"],
                                    name="djwebhooks_unique_attempt_number")
        ]
        indexes = [
            models.Index(fields=["replayed_by"], condition=models.Q(replayed_by__isnull=False),
                         name="djwebhooks_attempt_replayer"),
        ]

    def __str__(self):
        outcome = self.response_status or self.notification or "error"
        return f"attempt {self.attempt}: {outcome}"


class RateBucket(models.Model):
    """How much of a rate-limited target's rate is spent, shared by every worker.

    The requests granted so far are spread out at the target's rate up to ``busy_until``
    (on the database's clock): a request may start while that moment is at most a second
    ahead, so a target with a limit of *n* a second gets at most *n* requests in any
    second after a quiet one, and *n* a second on average. See ``djwebhooks.pacing``.
    """

    target = models.OneToOneField(WebhookTarget, on_delete=models.CASCADE, primary_key=True,
                                  related_name="+", verbose_name=_("target"))
    busy_until = models.DateTimeField(_("busy until"))

    class Meta:
        verbose_name = _("rate bucket")
        verbose_name_plural = _("rate buckets")

    def __str__(self):
        return f"rate of target {self.target_id}"


class WorkerHeartbeat(models.Model):
    """A worker process that is sending (or sent) deliveries, and when it was last seen.

    A worker writes its row when it starts and again at every heartbeat, when it renews its
    claims; ``last_seen`` is the database's clock. A row whose ``last_seen`` is old belongs
    to a worker that stopped (``stopped_at``) or died.
    """

    claimant = models.CharField(
        _("claimant"), max_length=255, unique=True,
        help_text=_("The name on the deliveries it claims (Delivery.claimed_by)."),
    )
    worker_id = models.CharField(_("worker"), max_length=255,
                                 help_text=_("The --worker-id: host:pid unless given."))
    hostname = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("process id"))
    concurrency = models.PositiveIntegerField(_("concurrency"))
    started_at = models.DateTimeField(_("started"))
    last_seen = models.DateTimeField(_("last seen"), db_index=True)
    stopped_at = models.DateTimeField(_("stopped"), null=True, blank=True)
    handled = models.PositiveBigIntegerField(
        _("deliveries handled"), default=0,
        help_text=_("Deliveries it took to the end: sent, or finished without a request."),
    )

    class Meta:
        verbose_name = _("worker heartbeat")
        verbose_name_plural = _("worker heartbeats")
        ordering = ["-last_seen"]

    def __str__(self):
        return self.claimant


class ApiToken(models.Model):
    """A key a user gives a client of the webhook API (``Authorization: Bearer <key>``).

    Only a digest of the key is stored: the key is shown once, when it is made
    (``ApiToken.create``), and a lost one is revoked and replaced, never recovered.
    """

    #: How every key begins, so that a key found in a log or a repository is recognisable.
    PREFIX = "djwh_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_api_tokens",
        verbose_name=_("user"),
    )
    name = models.CharField(_("name"), max_length=100,
                            help_text=_("What the key is for, such as the client using it."))
    key_start = models.CharField(_("key starts with"), max_length=16,
                                 help_text=_("The first characters of the key, to tell keys "
                                             "apart."))
    digest = models.CharField(_("digest"), max_length=64, unique=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    last_used = models.DateTimeField(_("last used"), null=True, blank=True)

    class Meta:
        verbose_name = _("webhook API token")
        verbose_name_plural = _("webhook API tokens")
        ordering = ["-created", "-pk"]

    def __str__(self):
        return f"{self.name} ({self.key_start}…)"

    @staticmethod
    def digest_of(key):
        """The stored digest of ``key``: SHA-256, in hex. A key is 30 random bytes, so a
        fast digest cannot be searched backwards."""
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    @classmethod
    def create(cls, user, name):
        """Make a token for ``user``; return ``(token, key)``. The key is not kept."""
        key = cls.PREFIX + secrets.token_urlsafe(30)
        token = cls.objects.create(user=user, name=name, key_start=key[:12],
                                   digest=cls.digest_of(key))
        return token, key

    @classmethod
    def find(cls, key):
        """The token whose key is ``key``, with its user; None for an unknown key."""
        if not isinstance(key, str) or not key.startswith(cls.PREFIX) or len(key) > 200:
            return None
        return cls.objects.select_related("user").filter(digest=cls.digest_of(key)).first()


def missing_tables(using):
    """The names of dj-webhooks' tables that do not exist in the database ``using``."""
    connection = connections[using]
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
    return [model._meta.db_table for model in apps.get_app_config("djwebhooks").get_models()
            if model._meta.db_table not in tables]


def check_tables(using, cause=None):
    """Raise ``WebhookImproperlyConfigured`` naming the fix ('manage.py migrate') if any of
    dj-webhooks' tables is missing from the database ``using``.

    With ``cause``, the database error being explained: a database that cannot even be
    looked at (a PostgreSQL transaction the error aborted) leaves ``cause`` to be raised.
    """
    try:
        missing = missing_tables(using)
    except DatabaseError:
        if cause is None:
            raise
        return
    if missing:
        plural = len(missing) > 1
        raise WebhookImproperlyConfigured(
            f"The dj-webhooks table{'s' if plural else ''} {', '.join(missing)} "
            f"{'do' if plural else 'does'} not exist in database {using!r}: run "
            "'manage.py migrate'."
        ) from cause
