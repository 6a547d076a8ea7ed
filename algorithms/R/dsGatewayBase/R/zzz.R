# Package start-up: the disclosure defaults, named as dsBase 6.3.x names them.
#
# The gateway applies the DESCRIPTION `Options` field (and the profile's overrides)
# with options() when a session starts. .onLoad only fills in the options that are
# still unset, so that loading the namespace lazily (on first `dsGatewayBase::f`)
# never clobbers a value the site or the profile chose.

.dsgb_default_options <- list(
  datashield.privacyLevel = 5,
  default.datashield.privacyControlLevel = "banana",
  default.nfilter.glm = 0.33,
  default.nfilter.kNN = 3,
  default.nfilter.string = 80,
  default.nfilter.subset = 3,
  default.nfilter.stringShort = 20,
  default.nfilter.tab = 3,
  default.nfilter.noise = 0.25,
  default.nfilter.levels.density = 0.33,
  default.nfilter.levels.max = 40
)

.onLoad <- function(libname, pkgname) {
  current <- options()
  unset <- .dsgb_default_options[!(names(.dsgb_default_options) %in% names(current))]
  if (length(unset) > 0L) options(unset)
  invisible()
}
