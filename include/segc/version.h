/* segc's version (bumped by hand at releases). */
#ifndef SEGC_VERSION_H
#define SEGC_VERSION_H
#define SEGC_VERSION "0.1.0"
#endif
